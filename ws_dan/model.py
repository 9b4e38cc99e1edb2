"""WS-DAN: attention maps, bilinear attention pooling and the classifier (Hu et al., arXiv:1901.09891).

    features     F = backbone(image)                           (B, C, H, W)
    attentions   A = ReLU(BN(conv1x1(F)))                      (B, M, H, W)
    pooling      f_k = g(A_k * F),  k = 1..M                   feature matrix P = [f_1; ...; f_M]  (B, M, C)
    classifier   logits = W . normalise(P)                     (B, num_classes)

Training adds the center loss and the attention crop/drop views (``ws_dan.engine.train_step``); inference
averages the logits of the raw image and of the image cropped to the mean attention map
(:meth:`WSDAN.predict_logits`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention_crop
from .backbones import Backbone, canonical_name, create_backbone

EPSILON = 1e-12


@dataclass
class ModelConfig:
    """Everything needed to rebuild a trained model; stored inside every checkpoint.

    Defaults follow the paper and the reference implementations: M = 32 in the paper, 64 in the reference
    project's EfficientNet-B3 model (its best, 96.19% on Stanford Cars), so 64 here; the inference crop uses
    theta = 0.1 with 5% padding, as in GuYuc's WS-DAN.PyTorch (the paper's test-time crop of the mean map).
    """

    backbone: str = "efficientnet-b3"
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
    # ws_dan/convert.py). The defaults are the paper's / WS-DAN.PyTorch's; the reference (Grab) project used
    # a bare 1x1 conv for the attention maps, plain average pooling, a classifier with bias, logit_scale 1
    # and min-max normalised maps for the inference crop.
    attention_bn: bool = True  # attention maps = ReLU(BN(conv1x1(F))); False: conv1x1(F) only
    pool_normalize: bool = True  # sign-sqrt and L2 normalisation of the feature matrix
    fc_bias: bool = False
    attention_norm: str = "max"  # how the inference crop scales the mean map: "max" or "minmax"

    def __post_init__(self) -> None:
        self.backbone = canonical_name(self.backbone)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.class_names = [str(c) for c in self.class_names]
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.num_attentions < 1 or self.num_classes < 1 or self.image_size < 8:
            raise ValueError(f"invalid model config: {self}")

    def to_dict(self) -> dict:
        """Plain Python values only, so the checkpoint loads with ``weights_only=True``."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; ignores keys a later version may add."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class WSDANOutput(NamedTuple):
    logits: torch.Tensor  # (B, num_classes)
    features: torch.Tensor  # (B, M * C), the normalised feature matrix (used by the center loss)
    attention_maps: torch.Tensor  # (B, M, H, W)


def bilinear_attention_pooling(features: torch.Tensor, attentions: torch.Tensor, normalize: bool = True) -> torch.Tensor:
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

    def forward(self, images: torch.Tensor) -> WSDANOutput:
        feature_maps = self.features(images)
        attention_maps = self.attentions(feature_maps)
        feature_matrix = bilinear_attention_pooling(feature_maps, attention_maps, self.config.pool_normalize)
        logits = self.fc(feature_matrix * self.config.logit_scale)
        return WSDANOutput(logits, feature_matrix, attention_maps)

    @torch.no_grad()
    def predict_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: average the logits of the raw image and of its crop to the mean attention map.

        Returns ``(logits, mean_attention)`` with mean_attention (B, 1, H, W) for heatmaps.
        """
        raw = self(images)
        mean_attention = raw.attention_maps.mean(dim=1, keepdim=True)
        cfg = self.config
        crops = attention_crop(images, mean_attention, cfg.eval_crop_theta, cfg.eval_crop_padding, cfg.attention_norm)
        crop_logits = self(crops).logits
        return (raw.logits + crop_logits) / 2, mean_attention


def build_model(config: ModelConfig, pretrained: bool = False, pretrained_path=None) -> WSDAN:
    """Create a WS-DAN with the configured backbone, taking ImageNet weights as asked (see backbones.py).

    The config's normalisation is set from the backbone, so the data pipeline matches the weights.
    """
    backbone = create_backbone(config.backbone, pretrained=pretrained, pretrained_path=pretrained_path)
    config.mean, config.std = tuple(backbone.mean), tuple(backbone.std)
    return WSDAN(config, backbone)
