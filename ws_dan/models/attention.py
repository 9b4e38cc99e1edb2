"""Attention-guided data augmentation (WS-DAN section 3.3), batched: pure tensor functions, no loop over images.

Given one attention map A_k per image (B, 1, h, w), upsampled to the image size and normalised by its own
maximum, A*_k = A_k / max(A_k):

* **cropping** (eq. 4): C_k(i, j) = 1 if A*_k(i, j) > theta_c else 0; the box bounding C_k, padded, is cropped
  and resized back to the input size, so the network sees the part at higher resolution;
* **dropping** (eq. 5): D_k(i, j) = 0 if A*_k(i, j) > theta_d else 1; the image is multiplied by D_k, so the
  network must find other discriminative parts.

Everything runs as whole-batch tensor operations on the device: boxes come from masked min/max reductions,
the crops from a single ``grid_sample`` call, so there is neither a Python loop over the batch nor a
host-device synchronisation. An attention map that is zero everywhere (an empty mask) crops to the whole image
and drops nothing.

**Crops with real detail.** A box cut from the input-size image and blown up again holds no pixel the raw view
lacked. With a *detail copy* (the same augmented photo at ``scale`` x the input size, which the loader makes when
``ModelConfig.detail_scale`` > 1), the raw view is that copy box-filtered down (:func:`raw_view`) and the crop is
cut from the copy (``attention_crop(..., source=detail)``): a box of a third of the image then holds 2/3 of its
pixels' worth of real detail at scale 2 instead of being a 3x enlargement. The box is still found on the raw
view's attention map, so the network, the maps and the cost of a step keep the input size.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

Theta = Union[float, torch.Tensor]


def sample_attention_maps(
    attention_maps: torch.Tensor, num_samples: int = 2, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Pick ``num_samples`` of the M maps per image, each with probability proportional to its mass.

    attention_maps: (B, M, h, w), non-negative. Returns (B, num_samples, h, w). Sampling is with replacement,
    as in the reference implementation (the crop and the drop may use the same part). Maps of an image whose
    maps are all zero are picked uniformly.
    """
    mass = attention_maps.detach().float().sum(dim=(2, 3)).clamp_min(0)
    mass = mass + 1e-12 * (mass.sum(dim=1, keepdim=True) == 0)  # all-zero row: uniform instead of an error
    index = torch.multinomial(mass, num_samples, replacement=True, generator=generator)  # (B, num_samples)
    b = torch.arange(attention_maps.shape[0], device=attention_maps.device).unsqueeze(1)
    return attention_maps[b, index]


def random_theta(
    batch_size: int, low: float, high: float, device: torch.device, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """One threshold per image, uniform in [low, high) (the paper draws theta_c and theta_d per image)."""
    return low + (high - low) * torch.rand(batch_size, device=device, generator=generator)


def normalized_attention(attention_map: torch.Tensor, size: tuple[int, int], norm: str = "max") -> torch.Tensor:
    """Upsample (B, 1, h, w) maps bilinearly to ``size`` and scale each into [0, 1].

    ``norm="max"``: A / max(A), the paper's normalisation (maps are non-negative after the ReLU); an all-zero
    map stays all zero. ``norm="minmax"``: (A - min) / (max - min), for attention heads without a ReLU
    (the reference project's models); a constant map becomes all zero.
    """
    if attention_map.dim() == 3:
        attention_map = attention_map.unsqueeze(1)
    up = F.interpolate(attention_map.float(), size=size, mode="bilinear", align_corners=False)
    peak = up.amax(dim=(2, 3), keepdim=True)
    if norm == "minmax":
        low = up.amin(dim=(2, 3), keepdim=True)
        return (up - low) / (peak - low).clamp_min(1e-12)
    if norm != "max":
        raise ValueError(f"norm must be 'max' or 'minmax', got {norm!r}")
    return up / peak.clamp_min(1e-12)


def _as_column(theta: Theta, batch_size: int, device: torch.device) -> torch.Tensor:
    theta = torch.as_tensor(theta, dtype=torch.float32, device=device)
    return theta.expand(batch_size).reshape(batch_size, 1, 1, 1)


def attention_crop_boxes(
    attention_map: torch.Tensor, image_size: tuple[int, int], theta: Theta, padding_ratio: float, norm: str = "max"
) -> torch.Tensor:
    """Boxes (B, 4) as float ``x0, y0, x1, y1`` pixel-edge coordinates (x1, y1 exclusive).

    Each box bounds every pixel where A*_k > theta, grows by ``padding_ratio`` of the image's height/width on
    each side, and is clipped to the image. An image with no pixel above the threshold gets the whole image.
    """
    height, width = image_size
    batch = attention_map.shape[0]
    device = attention_map.device
    mask = normalized_attention(attention_map, image_size, norm) > _as_column(theta, batch, device)
    mask = mask[:, 0]  # (B, H, W)
    rows = mask.any(dim=2)  # (B, H)
    cols = mask.any(dim=1)  # (B, W)
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    inf = torch.tensor(float("inf"), device=device)
    y0 = torch.where(rows, ys, inf).amin(dim=1)
    y1 = torch.where(rows, ys, -inf).amax(dim=1) + 1
    x0 = torch.where(cols, xs, inf).amin(dim=1)
    x1 = torch.where(cols, xs, -inf).amax(dim=1) + 1
    pad_y, pad_x = padding_ratio * height, padding_ratio * width
    boxes = torch.stack([(x0 - pad_x).clamp_min(0), (y0 - pad_y).clamp_min(0),
                         (x1 + pad_x).clamp_max(width), (y1 + pad_y).clamp_max(height)], dim=1)
    whole = torch.tensor([0.0, 0.0, float(width), float(height)], device=device)
    return torch.where(rows.any(dim=1, keepdim=True), boxes, whole)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """Crop each image to its box and resize bilinearly to ``size`` (default: the input size), in one call.

    Output pixel i samples the input at y0 + (i + 0.5) * (y1 - y0) / H_out - 0.5 (pixel centres, the
    convention of ``F.interpolate(..., align_corners=False)`` and ``roi_align(..., aligned=True)``), built as
    one sampling grid per image (built by broadcasting, which exports to ONNX without an AffineGrid op) and
    applied with a single ``grid_sample``.
    """
    batch, _, height, width = images.shape
    out_h, out_w = size if size is not None else (height, width)
    x0, y0, x1, y1 = boxes.to(torch.float32).unbind(dim=1)
    # Output pixel centres as fractions of the box, (i + 0.5) / n, mapped into the box in input pixels and then
    # to grid_sample's normalised coordinates: g = (2 * p + 1) / size - 1 (align_corners=False).
    fx = (torch.arange(out_w, device=images.device, dtype=torch.float32) + 0.5) / out_w
    fy = (torch.arange(out_h, device=images.device, dtype=torch.float32) + 0.5) / out_h
    gx = (2 * (x0[:, None] + fx[None, :] * (x1 - x0)[:, None])) / width - 1  # (B, out_w)
    gy = (2 * (y0[:, None] + fy[None, :] * (y1 - y0)[:, None])) / height - 1  # (B, out_h)
    grid = torch.stack([gx[:, None, :].expand(batch, out_h, out_w), gy[:, :, None].expand(batch, out_h, out_w)], -1)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def raw_view(images: torch.Tensor, scale: int) -> torch.Tensor:
    """The input-size view of a detail copy ``scale`` x larger: the mean of each ``scale`` x ``scale`` block (a
    box filter, so the downsampling antialiases exactly). ``scale`` 1: the images themselves."""
    if scale == 1:
        return images
    if images.shape[-1] % scale or images.shape[-2] % scale:
        raise ValueError(f"a detail copy of {tuple(images.shape[-2:])} px is not a multiple of the scale {scale}")
    return F.avg_pool2d(images, scale)


def attention_crop(
    images: torch.Tensor, attention_map: torch.Tensor, theta: Theta, padding_ratio: float, norm: str = "max",
    source: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Attention cropping (eq. 4): zoom each image into the region where its map exceeds theta x max.

    The box is found at the size of ``images``; ``source``, the same images at a higher resolution (the detail
    copy), is where it is cut from when given, resampled to the size of ``images``. At ``source`` = 2 x
    ``images`` the crop of the whole image is :func:`raw_view` of it (bilinear sampling at 2x lands midway
    between pixel pairs: a 2 x 2 box filter)."""
    size = tuple(images.shape[-2:])
    boxes = attention_crop_boxes(attention_map, size, theta, padding_ratio, norm)
    if source is None:
        return crop_and_resize(images, boxes)
    sx, sy = source.shape[-1] / size[1], source.shape[-2] / size[0]
    scale = torch.tensor([sx, sy, sx, sy], device=boxes.device, dtype=boxes.dtype)
    return crop_and_resize(source, boxes * scale, size)


def attention_drop_mask(attention_map: torch.Tensor, image_size: tuple[int, int], theta: Theta) -> torch.Tensor:
    """Keep-mask D_k (B, 1, H, W), 1.0 where A*_k <= theta and 0.0 where the part is erased (eq. 5)."""
    batch = attention_map.shape[0]
    norm = normalized_attention(attention_map, image_size)
    return (norm <= _as_column(theta, batch, attention_map.device)).to(norm.dtype)


def attention_drop(images: torch.Tensor, attention_map: torch.Tensor, theta: Theta) -> torch.Tensor:
    """Attention dropping (eq. 5): erase (set to 0) where each image's map exceeds theta x max."""
    mask = attention_drop_mask(attention_map, tuple(images.shape[-2:]), theta)
    return images * mask.to(images.dtype)


# --------------------------------------------------------------------------------------------------------
# The reference project's inference crop (sun-yitao/GrabAIChallenge, ws-dan/wsdan_predict.py), for converted
# checkpoints (ModelConfig.crop_convention == "grab"). Its model returns the mean attention map min-max normalised
# on the feature grid; predict then upsamples it with F.upsample_bilinear (align_corners=True), thresholds it at
# theta_c = 0.5, takes the nonzero rows/columns' min and max, slices X[..., y_min:y_max, x_min:x_max] (so the
# last row and column of the box are left out) and upsamples that slice to the input size, again with
# align_corners=True. The same numbers here, batched.


def grab_attention_boxes(attention_map: torch.Tensor, image_size: tuple[int, int], theta: Theta = 0.5) -> torch.Tensor:
    """Boxes (B, 4) ``x0, y0, x1, y1`` (x1, y1 exclusive) as the reference code sliced them.

    A* = (A - min A) / (max A - min A) on the (h, w) grid, upsampled to ``image_size`` with align_corners=True;
    the mask A* > theta gives ``y0 = min row, y1 = max row`` (exclusive, as the reference's slice), likewise for
    x. Where the reference would fail, we keep going: an empty mask (a constant map) crops to the whole image,
    and a box one pixel thin (y0 == y1) keeps that one row/column.
    """
    if attention_map.dim() == 3:
        attention_map = attention_map.unsqueeze(1)
    height, width = image_size
    batch = attention_map.shape[0]
    device = attention_map.device
    a = attention_map.float()
    low = a.amin(dim=(2, 3), keepdim=True)
    high = a.amax(dim=(2, 3), keepdim=True)
    norm = (a - low) / (high - low).clamp_min(1e-12)
    up = F.interpolate(norm, size=image_size, mode="bilinear", align_corners=True)
    mask = (up > _as_column(theta, batch, device))[:, 0]  # (B, H, W)
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    inf = torch.tensor(float("inf"), device=device)
    y0 = torch.where(rows, ys, inf).amin(dim=1)
    y1 = torch.maximum(torch.where(rows, ys, -inf).amax(dim=1), y0 + 1)
    x0 = torch.where(cols, xs, inf).amin(dim=1)
    x1 = torch.maximum(torch.where(cols, xs, -inf).amax(dim=1), x0 + 1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    whole = torch.tensor([0.0, 0.0, float(width), float(height)], device=device)
    return torch.where(rows.any(dim=1, keepdim=True), boxes, whole)


def crop_and_resize_align_corners(images: torch.Tensor, boxes: torch.Tensor,
                                  size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """``F.interpolate(images[b, :, y0:y1, x0:x1], size, mode="bilinear", align_corners=True)`` for every image
    at once: output pixel i samples the input at y0 + i * (y1 - y0 - 1) / (H_out - 1) (first and last pixels of
    the slice map onto the first and last output pixels), as one ``grid_sample`` with align_corners=True."""
    batch, _, height, width = images.shape
    out_h, out_w = size if size is not None else (height, width)
    x0, y0, x1, y1 = boxes.to(torch.float32).unbind(dim=1)
    fx = torch.arange(out_w, device=images.device, dtype=torch.float32) / max(out_w - 1, 1)
    fy = torch.arange(out_h, device=images.device, dtype=torch.float32) / max(out_h - 1, 1)
    px = x0[:, None] + fx[None, :] * (x1 - x0 - 1)[:, None]  # input pixel coordinates (B, out_w)
    py = y0[:, None] + fy[None, :] * (y1 - y0 - 1)[:, None]
    gx = 2 * px / max(width - 1, 1) - 1  # grid_sample's normalised coordinates with align_corners=True
    gy = 2 * py / max(height - 1, 1) - 1
    grid = torch.stack([gx[:, None, :].expand(batch, out_h, out_w), gy[:, :, None].expand(batch, out_h, out_w)], -1)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=True)


def grab_attention_crop(images: torch.Tensor, attention_map: torch.Tensor, theta: Theta = 0.5) -> torch.Tensor:
    """The reference project's inference crop (see :func:`grab_attention_boxes`), resized back to the input
    size with align_corners=True."""
    boxes = grab_attention_boxes(attention_map, tuple(images.shape[-2:]), theta)
    return crop_and_resize_align_corners(images, boxes)
