"""WS-DAN: attention maps, bilinear attention pooling and the classifier (Hu et al., arXiv:1901.09891).

    features     F = backbone(image)                           (B, C, H, W)
    attentions   A = ReLU(BN(conv1x1(F)))                      (B, M, H, W)
    pooling      f_k = g(A_k * F),  k = 1..M                   feature matrix P = [f_1; ...; f_M]  (B, M, C)
    classifier   logits = W . normalise(P)                     (B, num_classes)

Training adds the center loss and the attention crop/drop views (``ws_dan.training.engine.train_step``); inference
averages the logits of the raw image and of the image cropped to the mean attention map
(:meth:`WSDAN.predict_logits`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ws_dan.models.attention import attention_crop, grab_attention_crop, raw_view
from ws_dan.models.backbones import Backbone, canonical_name, create_backbone

EPSILON = 1e-12
#: Largest detail copy: 4 x 512 px is already 2048 px a side per image in the batch.
MAX_DETAIL_SCALE = 4
METHODS = ("wsdan", "baseline")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a trained model; stored inside every checkpoint.

    Defaults follow the paper and the reference implementations: M = 32 in the paper, 64 in the reference
    project's EfficientNet-B3 model (its best, 96.19% on Stanford Cars), so 64 here; the inference crop uses
    theta = 0.1 with 5% padding, as in GuYuc's WS-DAN.PyTorch (the paper's test-time crop of the mean map).
    """

    backbone: str = "efficientnet-b3"
    method: str = "wsdan"  # "wsdan", or "baseline": backbone + global average pooling + linear classifier
    num_classes: int = 196
    class_names: list[str] = field(default_factory=list)
    num_attentions: int = 64
    image_size: int = 512
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # The normalised feature matrix has unit L2 norm over M*C values, so each entry is tiny; a fixed scale
    # on the classifier input (100, as in WS-DAN.PyTorch) gives logits of a trainable size.
    logit_scale: float = 100.0
    eval_crop_theta: float = 0.1
    eval_crop_padding: float = 0.05
    # Variants of the head, so that models trained by other WS-DAN code keep their exact formula (see
    # ws_dan/models/convert.py). The defaults are the paper's / WS-DAN.PyTorch's; the reference (Grab) project used
    # a bare 1x1 conv for the attention maps, plain average pooling, a classifier with bias, logit_scale 1
    # and min-max normalised maps for the inference crop.
    attention_bn: bool = True  # attention maps = ReLU(BN(conv1x1(F))); False: conv1x1(F) only
    pool_normalize: bool = True  # sign-sqrt and L2 normalisation of the feature matrix
    fc_bias: bool = False
    attention_norm: str = "max"  # how the inference crop scales the mean map: "max" or "minmax"
    # The preprocessing and inference-crop convention a model was trained with, so that converted models predict
    # as they did in their own code. "bilinear" / "wsdan": this toolkit's (antialiased bilinear resize; box from the
    # upsampled map, pixel-centre crop). "lanczos" / "grab": the reference project's (PIL LANCZOS resize;
    # ws_dan.models.attention.grab_attention_crop). Defaults keep every existing checkpoint predicting as before.
    resize_interpolation: str = "bilinear"
    crop_convention: str = "wsdan"
    # The loader's detail copy: each photo (augmented) at detail_scale x image_size; the network sees it box-filtered
    # to image_size, the attention crops are cut from it (ws_dan.models.attention). 1: no copy, crops from the
    # input-size image (every checkpoint written before the copy existed).
    detail_scale: int = 1

    def __post_init__(self) -> None:
        self.backbone = canonical_name(self.backbone)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.class_names = [str(c) for c in self.class_names]
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.num_attentions < 1 or self.num_classes < 1 or self.image_size < 8:
            raise ValueError(f"invalid model config: {self}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.detail_scale, bool) or not (isinstance(self.detail_scale, int)
                                                       and 1 <= self.detail_scale <= MAX_DETAIL_SCALE):
            raise ValueError(f"detail_scale must be an integer from 1 to {MAX_DETAIL_SCALE}, got {self.detail_scale!r}")
        if self.detail_scale > 1 and (self.method != "wsdan" or self.crop_convention != "wsdan"):
            raise ValueError("detail_scale > 1 needs WS-DAN's own crop (method 'wsdan', crop_convention 'wsdan')")

    @property
    def load_size(self) -> int:
        """The side of the images the loader gives the model: image_size x detail_scale."""
        return self.image_size * self.detail_scale

    def to_dict(self) -> dict:
        """Plain Python values only, so the checkpoint loads with ``weights_only=True``."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; ignores keys a later version may add."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class WSDANOutput(NamedTuple):
    logits: torch.Tensor  # (B, num_classes)
    features: torch.Tensor  # (B, M * C), the normalised feature matrix (used by the center loss)
    attention_maps: torch.Tensor  # (B, M, H, W)
    effect_logits: Optional[torch.Tensor] = None  # CAL: logits(real attention) - logits(counterfactual)


def bilinear_attention_pooling(features: torch.Tensor, attentions: torch.Tensor,
                               normalize: bool = True) -> torch.Tensor:
    """Bilinear attention pooling (BAP, eq. 2-3) with sign-sqrt and L2 normalisation.

    f_k = (1 / HW) sum_{i,j} A_k(i, j) F(:, i, j)  for each of the M maps, computed for all maps at once as one
    contraction (B, M, H, W) x (B, C, H, W) -> (B, M, C); then P = sign(f) sqrt(|f|) and P / ||P||_2 over the
    flattened M*C vector (skipped with ``normalize=False``). Returns (B, M * C).
    """
    b, m, h, w = attentions.shape
    pooled = torch.einsum("bmhw,bchw->bmc", attentions, features).reshape(b, -1) / float(h * w)
    if not normalize:
        return pooled
    pooled = torch.sign(pooled) * torch.sqrt(pooled.abs() + EPSILON)
    return F.normalize(pooled, dim=-1)


class WSDAN(nn.Module):
    """Backbone + M attention maps + BAP + linear classifier, with one feature center per class.

    ``feature_centers`` (num_classes, M * C) is a buffer, not a parameter: it is updated by a moving average
    in the training step (not by the optimizer) and saved, loaded and moved to a device with the model.
    """

    def __init__(self, config: ModelConfig, backbone: Optional[Backbone] = None):
        super().__init__()
        self.config = config
        if backbone is None:  # rebuilding a trained model: its weights come from the checkpoint
            backbone = create_backbone(config.backbone, pretrained=False)
        self.features = backbone.features
        self.num_features = backbone.channels
        m = config.num_attentions
        head: dict[str, nn.Module] = {"conv": nn.Conv2d(self.num_features, m, kernel_size=1, bias=False)}
        if config.attention_bn:
            head.update(bn=nn.BatchNorm2d(m, eps=0.001), relu=nn.ReLU(inplace=True))
        self.attentions = nn.Sequential(OrderedDict(head))
        self.fc = nn.Linear(m * self.num_features, config.num_classes, bias=config.fc_bias)
        self.register_buffer("feature_centers", torch.zeros(config.num_classes, m * self.num_features))

    def forward(self, images: torch.Tensor, counterfactual: bool = False) -> WSDANOutput:
        feature_maps = self.features(images)
        attention_maps = self.attentions(feature_maps)
        pool = self.config.pool_normalize
        feature_matrix = bilinear_attention_pooling(feature_maps, attention_maps, pool)
        logits = self.fc(feature_matrix * self.config.logit_scale)
        effect = None
        if counterfactual:
            # CAL (Rao et al., ICCV 2021): pool the same features with counterfactual attention, random maps
            # ~ U[0, 2] in training and all ones at evaluation; the effect of the learned attention is
            # logits(A) - logits(A_counterfactual), which a cross-entropy then makes discriminative.
            if self.training:
                fake = torch.rand_like(attention_maps) * 2
            else:
                fake = torch.ones_like(attention_maps)
            counter = bilinear_attention_pooling(feature_maps, fake, pool)
            effect = logits - self.fc(counter * self.config.logit_scale)
        return WSDANOutput(logits, feature_matrix, attention_maps, effect)

    @torch.no_grad()
    def predict_logits(
        self, images: torch.Tensor, thetas: Optional[Sequence[float]] = None, flip: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: average the logits of the raw image and of its crops to the mean attention map.

        The paper's default is one crop at ``config.eval_crop_theta``. Test-time views: ``thetas`` gives several
        crop thresholds (CAL uses 0.3, 0.2, 0.1) and ``flip`` adds the same views of the mirrored image; all
        logits are averaged. Returns ``(logits, mean_attention)``, mean_attention (B, 1, h, w) of the raw image.
        ``images`` are at ``config.load_size``: with a detail copy the raw view is its box-filtered image and the
        crops are cut from the copy.
        """
        cfg = self.config
        thetas = [cfg.eval_crop_theta] if thetas is None else list(thetas)
        views = [images, images.flip(-1)] if flip else [images]
        total, count, first_attention = 0, 0, None
        for detail in views:
            view = raw_view(detail, cfg.detail_scale)
            raw = self(view)
            mean_attention = raw.attention_maps.mean(dim=1, keepdim=True)
            first_attention = mean_attention if first_attention is None else first_attention
            total, count = total + raw.logits, count + 1
            for theta in thetas:
                if cfg.crop_convention == "grab":
                    crops = grab_attention_crop(view, mean_attention, theta)
                else:
                    crops = attention_crop(view, mean_attention, theta, cfg.eval_crop_padding, cfg.attention_norm,
                                           source=detail if cfg.detail_scale > 1 else None)
                total, count = total + self(crops).logits, count + 1
        return total / count, first_attention


class BaselineClassifier(nn.Module):
    """The plain CNN baseline: backbone, global average pooling, dropout, linear classifier.

    Shares WS-DAN's interface (``forward`` -> WSDANOutput, ``predict_logits``), so the same engine, checkpoints
    and predict.py serve both. Its "attention" for heatmaps is the class activation map (Zhou et al. 2016)
    of the predicted class: sum_c w_{k,c} F_c.
    """

    def __init__(self, config: ModelConfig, backbone: Optional[Backbone] = None):
        super().__init__()
        self.config = config
        if backbone is None:
            backbone = create_backbone(config.backbone, pretrained=False)
        self.features = backbone.features
        self.num_features = backbone.channels
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(self.num_features, config.num_classes)

    def forward(self, images: torch.Tensor, counterfactual: bool = False) -> WSDANOutput:
        feature_maps = self.features(images)
        pooled = feature_maps.mean(dim=(2, 3))
        logits = self.fc(self.dropout(pooled))
        # the class activation maps double as "attention" (B, K, h, w) for heatmaps
        cams = torch.einsum("kc,bchw->bkhw", self.fc.weight, feature_maps)
        return WSDANOutput(logits, pooled, cams)

    @torch.no_grad()
    def predict_logits(
        self, images: torch.Tensor, thetas: Optional[Sequence[float]] = None, flip: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (averaged with the mirrored image's when ``flip``) and the predicted class's CAM (B, 1, h, w)."""
        out = self(images)
        logits = (out.logits + self(images.flip(-1)).logits) / 2 if flip else out.logits
        index = logits.argmax(dim=1).view(-1, 1, 1, 1).expand(-1, 1, *out.attention_maps.shape[-2:])
        cam = out.attention_maps.gather(1, index).clamp_min(0)
        return logits, cam


def create_model(config: ModelConfig, backbone: Optional[Backbone] = None) -> nn.Module:
    """The model class the config's ``method`` names (WSDAN or BaselineClassifier)."""
    cls = BaselineClassifier if config.method == "baseline" else WSDAN
    return cls(config, backbone)


def build_model(config: ModelConfig, pretrained: bool = False, pretrained_path=None) -> nn.Module:
    """Create the configured model (WS-DAN or the baseline), taking ImageNet weights as asked (backbones.py).

    The config's normalisation is set from the backbone, so the data pipeline matches the weights.
    """
    backbone = create_backbone(config.backbone, pretrained=pretrained, pretrained_path=pretrained_path)
    config.mean, config.std = tuple(backbone.mean), tuple(backbone.std)
    return create_model(config, backbone)
