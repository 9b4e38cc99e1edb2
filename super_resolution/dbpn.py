"""Deep Back-Projection Networks (Haris, Shakhnarovich, Ukita: "Deep Back-Projection Networks for
Super-Resolution", CVPR 2018), written so that the authors' published ``.pth`` files load unchanged.

The network alternates *up-projection* units (low-res features -> high-res features) and *down-projection*
units (high -> low), each of which corrects its own estimate by projecting the error back::

    up-projection    H0 = deconv1(L)          first high-res estimate
                     L0 = conv2(H0)            projected back down
                     H1 = deconv3(L0 - L)      the low-res error, projected up
                     return H0 + H1
    down-projection  L0 = conv1(H)
                     H0 = deconv2(L0)
                     L1 = conv3(H0 - H)
                     return L0 + L1

Every conv/deconv is followed by a single-parameter PReLU. "Dense" units (up3.., down2..) first squeeze the
concatenation of all earlier outputs of the other kind (newest first) to 64 channels with a 1x1 conv. The
projection kernels depend on the scale: 2x kernel 6 stride 2, 4x kernel 8 stride 4, 8x kernel 12 stride 8
(padding 2), so an n-pixel side maps to exactly ``scale * n`` and back: any input size works.

Variants of the release (4x parameter counts in brackets):

* ``dbpn``            D-DBPN, 7 up + 6 down units, dense, output conv over all 7 high-res maps  (10,426,358)
* ``dbpnll``          the same with 10 stages                                                   (15,348,302)
* ``dbpn-s``          up, down, up; output over the 2 high-res maps                              (2,386,958)
* ``dbpn-res-mr64-3`` the D-DBPN units applied 3 times recurrently (shared weights; each pass starts from
  the previous pass's last low-res map), output conv over the 3 passes' last high-res maps, plus the
  bicubic enlargement of the input (residual learning)                                          (10,419,446)

Inputs are RGB in [0, 1] with no mean subtraction; callers clamp the output to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

#: scale -> (kernel, stride, padding) of every projection conv / deconv
PROJECTION = {2: (6, 2, 2), 4: (8, 4, 2), 8: (12, 8, 2)}
SCALES = tuple(PROJECTION)


@dataclass(frozen=True)
class VariantSpec:
    """What distinguishes one published DBPN variant from another."""

    name: str            # the release's name, for messages
    num_stages: int      # up-projection units (down units: one fewer)
    iterations: int = 1  # >1: recurrent (the units are applied this many times with shared weights)
    residual: bool = False  # add the bicubic enlargement of the input to the output


VARIANTS: dict[str, VariantSpec] = {
    "dbpn": VariantSpec("D-DBPN", 7),
    "dbpnll": VariantSpec("DBPNLL", 10),
    "dbpn-s": VariantSpec("DBPN-S", 2),
    "dbpn-res-mr64-3": VariantSpec("DBPN-RES-MR64-3", 7, iterations=3, residual=True),
}


class ConvBlock(nn.Module):
    """Conv2d + optional single-parameter PReLU (attribute names ``conv``/``act`` as in the release)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, activation: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=True)
        self.act = nn.PReLU() if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(x) if self.act is not None else x


class DeconvBlock(nn.Module):
    """ConvTranspose2d + single-parameter PReLU (attribute names ``deconv``/``act`` as in the release)."""

    def __init__(self, channels: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel, stride, padding, bias=True)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.deconv(x))


class UpProjection(nn.Module):
    """Up-projection unit; with ``inputs > 1`` a 1x1 conv first squeezes the concatenated low-res maps."""

    def __init__(self, channels: int, kernel: int, stride: int, padding: int, inputs: int = 1):
        super().__init__()
        if inputs > 1:
            self.conv = ConvBlock(channels * inputs, channels, 1, 1, 0)
        self.up_conv1 = DeconvBlock(channels, kernel, stride, padding)
        self.up_conv2 = ConvBlock(channels, channels, kernel, stride, padding)
        self.up_conv3 = DeconvBlock(channels, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            x = self.conv(x)
        h0 = self.up_conv1(x)
        l0 = self.up_conv2(h0)
        h1 = self.up_conv3(l0 - x)
        return h1 + h0


class DownProjection(nn.Module):
    """Down-projection unit; with ``inputs > 1`` a 1x1 conv first squeezes the concatenated high-res maps."""

    def __init__(self, channels: int, kernel: int, stride: int, padding: int, inputs: int = 1):
        super().__init__()
        if inputs > 1:
            self.conv = ConvBlock(channels * inputs, channels, 1, 1, 0)
        self.down_conv1 = ConvBlock(channels, channels, kernel, stride, padding)
        self.down_conv2 = DeconvBlock(channels, kernel, stride, padding)
        self.down_conv3 = ConvBlock(channels, channels, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            x = self.conv(x)
        l0 = self.down_conv1(x)
        h0 = self.down_conv2(l0)
        l1 = self.down_conv3(h0 - x)
        return l1 + l0


class DBPN(nn.Module):
    """One network class for all four variants (see the module docstring); ``variant`` names one of VARIANTS.

    Module names (``feat0``, ``feat1``, ``up1``..``upT``, ``down1``..``down{T-1}``, ``output_conv``) follow the
    release, so ``load_state_dict`` takes its files once the DataParallel ``module.`` prefix is stripped.
    """

    def __init__(self, variant: str = "dbpn", scale: int = 4, num_channels: int = 3, base_filter: int = 64,
                 feat: int = 256, residual: Optional[bool] = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown DBPN variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if scale not in PROJECTION:
            raise ValueError(f"DBPN supports scales {', '.join(map(str, SCALES))}; got {scale}")
        spec = VARIANTS[variant]
        self.variant, self.scale, self.spec = variant, scale, spec
        # residual=None: the variant's own choice; True also lets a variant be trained residually (our option).
        self.residual = spec.residual if residual is None else bool(residual)
        kernel, stride, padding = PROJECTION[scale]
        t = spec.num_stages
        self.feat0 = ConvBlock(num_channels, feat, 3, 1, 1)
        self.feat1 = ConvBlock(feat, base_filter, 1, 1, 0)
        # up_k sees the k-1 low-res maps made so far, down_k the k high-res maps (plain units when there is one).
        for k in range(1, t + 1):
            setattr(self, f"up{k}", UpProjection(base_filter, kernel, stride, padding, inputs=max(k - 1, 1)))
            if k < t:
                setattr(self, f"down{k}", DownProjection(base_filter, kernel, stride, padding, inputs=k))
        out_maps = t if spec.iterations == 1 else spec.iterations
        self.output_conv = ConvBlock(out_maps * base_filter, num_channels, 3, 1, 1, activation=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # Kaiming-normal weights and zero biases, as the release initialises them (matters only for training).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        if self.residual:
            # A residual network then starts as exactly bicubic and every step improves on it (our choice; a
            # randomly initialised correction would start far below bicubic). Gradients still reach every
            # layer from the second step on.
            nn.init.zeros_(self.output_conv.conv.weight)

    def _project(self, low: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the back-projection units once; return the high-res maps (newest first) and the last low-res map."""
        t = self.spec.num_stages
        highs = [self.up1(low)]
        lows: list[torch.Tensor] = []
        for k in range(1, t):
            low = getattr(self, f"down{k}")(torch.cat(highs, 1) if k > 1 else highs[0])
            lows.insert(0, low)
            highs.insert(0, getattr(self, f"up{k + 1}")(torch.cat(lows, 1) if k > 1 else lows[0]))
        return highs, low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) in [0, 1] -> (B, C, scale*h, scale*w), not clamped (training wants the raw values)."""
        low = self.feat1(self.feat0(x))
        if self.spec.iterations == 1:
            highs, _ = self._project(low)
            out = self.output_conv(torch.cat(highs, 1))
        else:
            results = []
            for _ in range(self.spec.iterations):
                highs, low = self._project(low)  # the next pass starts from this pass's last low-res map
                results.append(highs[0])
            out = self.output_conv(torch.cat(results, 1))  # passes in order, oldest first (as the release)
        if self.residual:
            out = out + bicubic_upsample(x, self.scale)
        return out

    def extra_repr(self) -> str:
        return f"variant={self.variant!r} ({self.spec.name}), scale={self.scale}, residual={self.residual}"


def build_dbpn(variant: str = "dbpn", scale: int = 4, residual: Optional[bool] = None) -> DBPN:
    """A randomly initialised DBPN of the published configuration (3 channels, 64 base filters, 256 features)."""
    return DBPN(variant, scale, residual=residual)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------------
# Bicubic resizing exactly as PIL does it, as a matrix, so the residual variant adds the same bicubic image
# that the release trained with (PIL, a = -0.5) and it runs on any device inside the network.


def _pil_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5 (PIL's and Matlab's bicubic):
    w(x) = (a+2)|x|^3 - (a+3)|x|^2 + 1 for |x| < 1;  a|x|^3 - 5a|x|^2 + 8a|x| - 4a for 1 <= |x| < 2; else 0."""
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def pil_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) matrix M with ``resized = M @ signal``, the weights PIL's bicubic resize uses.

    PIL: scale = in/out; the kernel is stretched by max(scale, 1) (anti-aliasing when reducing); output pixel
    i is centred at (i + 0.5) * scale; the taps are the input pixels within the support around it, clipped to
    the image and renormalised to sum to 1 (PIL's border rule, not edge replication).
    """
    scale = in_size / out_size
    fscale = max(scale, 1.0)
    support = 2.0 * fscale
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = _pil_cubic((taps - center + 0.5) / fscale)
        total = w.sum()
        m[i, lo:hi] = w / total if total != 0 else w
    return m


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic enlargement of (B, C, h, w) in [0, 1] by ``scale``, as ``PIL.Image.resize(BICUBIC)`` computes it:
    horizontal pass ``x @ M_w^T``, clamped to [0, 1] (PIL stores the intermediate as 8 bits, which clips the
    cubic's overshoot), then the vertical pass ``M_h @ .``. Agrees with PIL within its 8-bit rounding (1/255)."""
    h, w = x.shape[-2:]
    mh = torch.from_numpy(pil_resize_matrix(h, h * scale)).to(x.device, x.dtype)
    mw = torch.from_numpy(pil_resize_matrix(w, w * scale)).to(x.device, x.dtype)
    return torch.matmul(mh, torch.matmul(x, mw.t()).clamp(0, 1))


def output_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """(w, h) -> (scale*w, scale*h): DBPN enlarges every side exactly by the scale."""
    return size[0] * scale, size[1] * scale

