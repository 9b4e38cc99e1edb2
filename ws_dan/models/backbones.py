"""Backbone registry: a name gives a feature extractor (image -> feature map) and its channel count.

Like timm's ``create_model``, one function, :func:`create_backbone`, builds any registered backbone::

    bb = create_backbone("efficientnet-b3", pretrained=True)   # ImageNet weights via efficientnet-pytorch's hub
    bb = create_backbone("mobilenet_v2", pretrained_path="mobilenet_v2-b0353104.pth")  # offline
    bb.features(torch.randn(1, 3, 512, 512)).shape              # (1, bb.channels, h, w)

Weights come, in this order of preference, from ``pretrained_path`` (a local file of the backbone library's
own format, loaded with ``weights_only=True``), from the library's download cache when ``pretrained=True``,
or from random initialisation. A failed download raises :class:`PretrainedWeightsError`, whose message tells
the user about ``--pretrained-path`` and ``--no-pretrained``.

Each backbone also records the input normalisation its weights were trained with, so the data pipeline and
the checkpoint use the right one (Inception-v3's ported TF weights expect mean = std = 0.5, not ImageNet's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from ws_dan.common.io import PathLike

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights could not be downloaded or loaded."""


@dataclass
class Backbone:
    """A feature extractor and what the WS-DAN head needs to know about it."""

    features: nn.Module
    channels: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


BackboneFactory = Callable[[bool, Optional[PathLike]], Backbone]
_REGISTRY: dict[str, BackboneFactory] = {}
_ALIASES: dict[str, str] = {}


def register_backbone(name: str, *aliases: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register ``factory(pretrained, pretrained_path) -> Backbone`` under ``name``."""

    def wrap(factory: BackboneFactory) -> BackboneFactory:
        _REGISTRY[name] = factory
        for alias in aliases:
            _ALIASES[alias] = name
        return factory

    return wrap


def list_backbones() -> list[str]:
    """Registered names (``timm:<model>`` is accepted as well, for any timm model)."""
    return sorted(_REGISTRY) + ["timm:<model>"]


def canonical_name(name: str) -> str:
    """Resolve aliases (``efficientnetb3`` -> ``efficientnet-b3``); raise ValueError for unknown names."""
    if name.startswith("timm:"):
        if len(name) == len("timm:"):
            raise ValueError("backbone 'timm:' needs a model name, e.g. 'timm:resnet18'")
        return name
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(list_backbones())}")
    return name


def create_backbone(name: str, pretrained: bool = False, pretrained_path: Optional[PathLike] = None) -> Backbone:
    """Build the backbone registered as ``name`` (see the module docstring for where weights come from)."""
    name = canonical_name(name)
    if pretrained_path is not None and not os.path.isfile(pretrained_path):
        raise FileNotFoundError(f"--pretrained-path {pretrained_path}: no such file (expected a weights file)")
    if name.startswith("timm:"):
        return _timm_backbone(name[len("timm:"):], pretrained, pretrained_path)
    return _REGISTRY[name](pretrained, pretrained_path)


# --------------------------------------------------------------------------------------------------------
# Weight loading shared by all factories


def _download_state_dict(url: str) -> dict:
    """Fetch a state dict through torch.hub's cache (``$TORCH_HOME``), with a helpful error when offline."""
    try:
        return torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, weights_only=True)
    except Exception as e:  # URLError, HTTPError, hash mismatch, a truncated cache file...
        raise PretrainedWeightsError(_offline_message(url, e)) from e


def _offline_message(source: str, error: BaseException) -> str:
    return (
        f"could not get the ImageNet weights from {source} ({type(error).__name__}: {error}). "
        "On a machine without internet, download the file elsewhere and pass it with --pretrained-path FILE, "
        "or train from random initialisation with --no-pretrained."
    )


def load_weights_file(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a local file with ``weights_only=True``.

    Accepts a bare state dict, one wrapped as ``{'state_dict': ...}`` / ``{'model': ...}``, and keys with the
    ``module.`` prefix that ``nn.DataParallel`` adds.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainedWeightsError(f"{path}: not a readable PyTorch weights file ({e})") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"{path}: expected a state dict (parameter name -> tensor)")
    obj = dict(obj)
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(obj, "module.")
    return obj


def _load_into(model: nn.Module, state: dict, source: str, allow_missing: Callable[[str], bool] = lambda k: False):
    """Load ``state`` strictly except for keys ``allow_missing`` accepts (e.g. freshly added CBAM modules)."""
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not allow_missing(k)]
    if missing or result.unexpected_keys:
        raise PretrainedWeightsError(
            f"{source} does not fit this backbone: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
        )


def _init_weights(model: nn.Module, url: str, pretrained: bool, pretrained_path: Optional[PathLike], **kw) -> None:
    if pretrained_path is not None:
        _load_into(model, load_weights_file(pretrained_path), str(pretrained_path), **kw)
    elif pretrained:
        _load_into(model, _download_state_dict(url), url, **kw)


# --------------------------------------------------------------------------------------------------------
# EfficientNet (efficientnet-pytorch), cut before the last 4 MBConv blocks as the reference project did


class EfficientNetFeatures(nn.Module):
    """Stem and the first ``len(blocks) - cut`` MBConv blocks of an efficientnet-pytorch EfficientNet.

    Attribute names follow efficientnet-pytorch (``_conv_stem``, ``_bn0``, ``_blocks.N``) so that its weight
    files and the reference project's checkpoints map onto this module by name. Drop-connect is scaled by
    the block's position among *all* blocks of the full network, as the library's ``extract_features`` does.
    """

    def __init__(self, net: nn.Module, cut: int = 4):
        super().__init__()
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._swish = net._swish
        self._blocks = nn.ModuleList(list(net._blocks)[: len(net._blocks) - cut])
        self._total_blocks = len(net._blocks)
        self._drop_connect_rate = net._global_params.drop_connect_rate
        self.out_channels = self._blocks[-1]._bn2.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        for idx, block in enumerate(self._blocks):
            rate = self._drop_connect_rate
            if rate:
                rate *= float(idx) / self._total_blocks
            x = block(x, drop_connect_rate=rate)
        return x


def _efficientnet_stride16(features: EfficientNetFeatures) -> EfficientNetFeatures:
    """Output stride 32 -> 16 without new weights, as :func:`_dilate_last_stage` does for MobileNetV2: the last
    kept block with a stride-2 depthwise conv gets stride 1 and every later depthwise conv dilation 2. The
    library's TensorFlow-style "same" padding is computed from stride and dilation on each call, so only the
    attributes change."""
    blocks = list(features._blocks)
    last = max(i for i, b in enumerate(blocks) if tuple(b._depthwise_conv.stride) == (2, 2))
    blocks[last]._depthwise_conv.stride = (1, 1)
    for block in blocks[last + 1:]:
        block._depthwise_conv.dilation = (2, 2)
    return features


def _efficientnet(variant: str, stride16: bool = False) -> BackboneFactory:
    def factory(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
        from efficientnet_pytorch import EfficientNet
        from efficientnet_pytorch.utils import url_map

        # image_size=None: TensorFlow-style "same" padding computed from each input's size, as the weights were
        # trained; a static padding for the default resolution (300 px for B3) pads a 512 px image differently.
        net = EfficientNet.from_name(variant, image_size=None)
        _init_weights(net, url_map[variant], pretrained, pretrained_path)
        features = EfficientNetFeatures(net, cut=4)
        if stride16:
            features = _efficientnet_stride16(features)
        return Backbone(features, features.out_channels)

    return factory


for _b in range(8):
    _aliases = ("efficientnetb3",) if _b == 3 else ()
    register_backbone(f"efficientnet-b{_b}", f"efficientnet_b{_b}", *_aliases)(_efficientnet(f"efficientnet-b{_b}"))
    # stride 16: twice as fine attention maps (the paper's Inception Mixed_6e is stride 16), the same weights
    register_backbone(f"efficientnet-b{_b}-s16", f"efficientnet_b{_b}_s16")(
        _efficientnet(f"efficientnet-b{_b}", stride16=True))


# --------------------------------------------------------------------------------------------------------
# torchvision backbones


@register_backbone("inception", "inception_v3", "inception_mixed_6e")
def _inception_mixed_6e(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
    """Inception-v3 up to Mixed_6e (768 channels, stride 16): the WS-DAN paper's setting."""
    return _inception(pretrained, pretrained_path, last="Mixed_6e")


@register_backbone("inception_mixed_7c")
def _inception_mixed_7c(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
    """Inception-v3 up to Mixed_7c (2048 channels, stride 32)."""
    return _inception(pretrained, pretrained_path, last="Mixed_7c")


def _inception(pretrained: bool, pretrained_path: Optional[PathLike], last: str) -> Backbone:
    from torchvision.models import Inception_V3_Weights, inception_v3

    # aux_logits=True so that torchvision's weight file (which holds the aux head) loads strictly.
    net = inception_v3(weights=None, aux_logits=True, init_weights=not (pretrained or pretrained_path))
    _init_weights(net, Inception_V3_Weights.IMAGENET1K_V1.url, pretrained, pretrained_path)
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
             "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
             "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
    names = names[: names.index(last) + 1]
    features = nn.Sequential(*[getattr(net, n) for n in names])
    # torchvision's Inception weights are ported from TensorFlow, trained on inputs scaled to [-1, 1]
    # (its transform_input flag converts ImageNet-normalised input to that); we normalise that way directly.
    return Backbone(features, 768 if last == "Mixed_6e" else 2048, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _resnet_features(net: nn.Module) -> nn.Sequential:
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


def _resnet(depth: int) -> BackboneFactory:
    def factory(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
        import torchvision.models as tvm

        net = getattr(tvm, f"resnet{depth}")(weights=None)
        weights = getattr(tvm, f"ResNet{depth}_Weights").DEFAULT
        _init_weights(net, weights.url, pretrained, pretrained_path)
        return Backbone(_resnet_features(net), 2048)

    return factory


for _d in (50, 101, 152):
    register_backbone(f"resnet{_d}")(_resnet(_d))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018).

    Channel attention  M_c(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))), then
    spatial attention  M_s(F) = sigmoid(conv7x7([mean_c(F); max_c(F)])); output F * M_c * M_s.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


def _cbam_bottleneck_class():
    from torchvision.models.resnet import Bottleneck

    class CBAMBottleneck(Bottleneck):
        """torchvision's Bottleneck with CBAM applied to the residual branch before the addition."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cbam = CBAM(self.conv3.out_channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.cbam(self.bn3(self.conv3(out)))
            return self.relu(out + identity)

    return CBAMBottleneck


@register_backbone("resnet152_cbam")
def _resnet152_cbam(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
    """ResNet-152 with CBAM in every bottleneck; ImageNet ResNet weights load, the CBAM modules start fresh."""
    from torchvision.models import ResNet152_Weights
    from torchvision.models.resnet import ResNet

    net = ResNet(_cbam_bottleneck_class(), [3, 8, 36, 3])
    _init_weights(net, ResNet152_Weights.DEFAULT.url, pretrained, pretrained_path,
                  allow_missing=lambda k: ".cbam." in k)
    return Backbone(_resnet_features(net), 2048)


@register_backbone("mobilenet_v2")
def _mobilenet_v2(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
    """torchvision MobileNetV2 features (1280 channels, stride 32): small and fast, for CPU runs and demos."""
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    net = mobilenet_v2(weights=None)
    _init_weights(net, MobileNet_V2_Weights.IMAGENET1K_V1.url, pretrained, pretrained_path)
    return Backbone(net.features, 1280)


def _dilate_last_stage(features: nn.Sequential, first: int = 14) -> nn.Sequential:
    """Output stride 32 -> 16 without new weights (DeepLab's recipe, Chen et al. 2017): the stride-2 depthwise
    conv of block ``first`` gets stride 1, and every later 3x3 depthwise conv dilation 2 (padding 2), so each
    layer still sees the same image area as with the pretrained stride; only the maps are twice as fine."""
    for index, block in enumerate(features):
        if index < first:
            continue
        for module in block.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.groups > 1:
                if index == first:
                    module.stride = (1, 1)
                else:
                    module.dilation, module.padding = (2, 2), (2, 2)
    return features


@register_backbone("mobilenet_v2_s16")
def _mobilenet_v2_s16(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
    """MobileNetV2 features with output stride 16 (1280 channels; 14x14 maps at 224 px instead of 7x7): the last
    stride-2 block dilated, every ImageNet weight kept (the same weight file as ``mobilenet_v2`` loads). Finer
    attention maps, as the paper's Inception Mixed_6e (stride 16) gives; the last five blocks cost 4x as much."""
    backbone = _mobilenet_v2(pretrained, pretrained_path)
    return Backbone(_dilate_last_stage(backbone.features), backbone.channels)


@register_backbone("mobilenet_v2_f14")
def _mobilenet_v2_f14(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
    """MobileNetV2 cut after block 13 (96 channels, stride 16): finer maps and cheaper, but without the last
    stage's features; the weight file of ``mobilenet_v2`` loads (the unused blocks are dropped after loading)."""
    backbone = _mobilenet_v2(pretrained, pretrained_path)
    return Backbone(backbone.features[:14], 96)


@register_backbone("tiny")
def _tiny(pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
    """A four-layer CNN (32 channels, stride 8) with no published weights: for tests and smoke runs."""
    if pretrained or pretrained_path is not None:
        raise PretrainedWeightsError("backbone 'tiny' has no pretrained weights; use --no-pretrained")

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    features = nn.Sequential(*block(3, 16, 2), *block(16, 32, 2), *block(32, 32, 2), *block(32, 32, 1))
    return Backbone(features, 32)


# --------------------------------------------------------------------------------------------------------
# timm (optional dependency)


class _LastFeature(nn.Module):
    """Adapt a timm ``features_only`` model (which returns a list) to return its last feature map."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


def _timm_backbone(model_name: str, pretrained: bool, pretrained_path: Optional[PathLike]) -> Backbone:
    try:
        import timm
    except ImportError:
        raise ImportError(
            f"backbone 'timm:{model_name}' needs the optional package timm: pip install timm "
            "(or pip install -e '.[timm]')"
        ) from None
    if not timm.is_model(model_name):
        raise ValueError(f"timm has no model named {model_name!r} (see timm.list_models())")
    kwargs: dict = dict(features_only=True, out_indices=(-1,))
    if pretrained_path is not None:
        # timm reads local files with weights_only=True (timm.models._helpers.load_state_dict).
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_path)))
    else:
        kwargs.update(pretrained=pretrained)
    try:
        net = timm.create_model(model_name, **kwargs)
    except Exception as e:
        if not (pretrained or pretrained_path):
            raise
        if pretrained_path is not None:
            raise PretrainedWeightsError(f"{pretrained_path}: could not load into timm:{model_name} ({e})") from e
        raise PretrainedWeightsError(_offline_message(f"timm's hub for {model_name}", e)) from e
    cfg = net.pretrained_cfg if hasattr(net, "pretrained_cfg") else {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    return Backbone(_LastFeature(net), net.feature_info.channels()[-1], mean=mean, std=std)
