"""Tiled super-resolution inference: memory bounded by the tile size, whatever the image size.

The low-resolution image is cut into tiles of at most ``tile`` x ``tile`` pixels. Each tile carries
``overlap`` extra pixels of context on every side that has a neighbour; the network runs on one tile at a
time and only the tile's *core* (without the context margins) is written to the output, so every output
pixel comes from exactly one tile and no seams are blended. DBPN's outputs depend on a wide neighbourhood
(13 projection units of kernel 8), but the influence of pixels more than ~16 low-res pixels away is below
8-bit rounding (measured: see tests/test_super_resolution.py), so the tiled result matches the untiled one.

Tiles along an axis of n pixels: m = 1 if n <= tile else ceil(n / (tile - 2 overlap)); the cores are the m
near-equal intervals [round(i n / m), round((i+1) n / m)), each widened by ``overlap`` (clipped to the image).
Peak memory is that of one ``tile``-sized forward pass plus the output image.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

DEFAULT_TILE = 256
DEFAULT_OVERLAP = 16


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB image -> (1, 3, H, W) float32 in [0, 1]."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_to_image(t: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] (clamped) or uint8 -> PIL RGB image."""
    t = t.detach().cpu()
    if t.dim() == 4:
        t = t[0]
    if t.dtype != torch.uint8:
        t = t.clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(t.permute(1, 2, 0).numpy(), "RGB")


def tile_spans(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split an axis of ``n`` pixels: a list of (input_start, input_end, core_start, core_end)."""
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice the overlap ({overlap})")
    if n <= tile:
        return [(0, n, 0, n)]
    m = math.ceil(n / (tile - 2 * overlap))
    bounds = [round(i * n / m) for i in range(m + 1)]
    return [(max(a - overlap, 0), min(b + overlap, n), a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def tiled_forward(model: nn.Module, lr: torch.Tensor, scale: int, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, device: Optional[Union[str, torch.device]] = None,
                  out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Super-resolve ``lr`` (1, C, h, w) in [0, 1] -> (1, C, scale*h, scale*w) on the CPU, clamped to [0, 1]
    (``out_dtype=torch.uint8``: 0..255, rounded, a quarter of the memory). ``tile <= 0`` runs untiled.

    Only one tile lives on ``device`` at a time (default: the model's device).
    """
    if lr.dim() != 4 or lr.shape[0] != 1:
        raise ValueError(f"expected a (1, C, h, w) tensor, got {tuple(lr.shape)}")
    device = torch.device(device) if device is not None else _model_device(model)
    _, c, h, w = lr.shape
    if tile <= 0:
        tile, overlap = max(h, w), 0
    out = torch.empty((1, c, h * scale, w * scale), dtype=out_dtype)
    s = scale
    for y0, y1, cy0, cy1 in tile_spans(h, tile, overlap):
        for x0, x1, cx0, cx1 in tile_spans(w, tile, overlap):
            piece = lr[:, :, y0:y1, x0:x1].to(device, torch.float32)
            sr = model(piece).clamp_(0, 1)
            core = sr[:, :, (cy0 - y0) * s:(cy1 - y0) * s, (cx0 - x0) * s:(cx1 - x0) * s]
            if out_dtype == torch.uint8:
                core = core.mul(255).round_()
            out[:, :, cy0 * s:cy1 * s, cx0 * s:cx1 * s] = core.to("cpu", out_dtype)
            del piece, sr, core
    return out


def super_resolve_image(model: nn.Module, image: Image.Image, scale: int, tile: int = DEFAULT_TILE,
                        overlap: int = DEFAULT_OVERLAP, device: Optional[Union[str, torch.device]] = None
                        ) -> Image.Image:
    """Enlarge a PIL image ``scale`` times with ``model`` (tiled); returns an RGB PIL image of
    (scale*w, scale*h). Any mode is accepted (converted to RGB)."""
    was_training = model.training
    model.eval()
    try:
        out = tiled_forward(model, image_to_tensor(image), scale, tile, overlap, device, out_dtype=torch.uint8)
    finally:
        model.train(was_training)
    return tensor_to_image(out)


class EnlargeSmallImages:
    """A PIL -> PIL transform: images with area w * h below ``max_area`` are super-resolved ``scale`` times,
    the others returned unchanged. Used by ``predict.py --sr-model`` in front of the classifier's resize, so
    small photos reach it with recovered detail instead of a blurry bicubic upscale."""

    def __init__(self, model: nn.Module, scale: int, max_area: int, tile: int = DEFAULT_TILE,
                 device: Optional[Union[str, torch.device]] = None):
        self.model, self.scale, self.max_area, self.tile, self.device = model, scale, max_area, tile, device
        self.enlarged = 0  # images enlarged by this instance (in this process)

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.width * image.height >= self.max_area:
            return image
        self.enlarged += 1
        return super_resolve_image(self.model, image, self.scale, tile=self.tile, device=self.device)
