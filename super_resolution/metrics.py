"""PSNR and SSIM the way super-resolution papers report them.

Convention (SRCNN, VDSR, DBPN, ...): the high-resolution image is first cropped to a multiple of the scale
("modcrop"); both images are converted to the luma channel of ITU-R BT.601 YCbCr as Matlab's ``rgb2ycbcr``
does, on the 0..255 scale::

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255          (R, G, B in 0..255; Y in 16..235)

and a border of ``scale`` pixels is cropped from every side before measuring (the borders of a bicubic or
learned enlargement are unreliable and papers ignore them).

PSNR = 10 log10(255^2 / MSE).

SSIM (Wang et al. 2004, the authors' Matlab ``ssim_index`` defaults): with a Gaussian window w (11x11,
sigma 1.5, normalised to sum 1), mu_x = w * x, sigma_x^2 = w * x^2 - mu_x^2, sigma_xy = w * (x y) - mu_x mu_y,
C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 255::

    SSIM(x, y) = mean over the *valid* window positions of
                 (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

This is also scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)``.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
from PIL import Image
from scipy.ndimage import correlate1d

ArrayLike = Union[np.ndarray, Image.Image]


def _as_float(img: ArrayLike) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


def rgb_to_y(img: ArrayLike) -> np.ndarray:
    """H x W x 3 RGB on 0..255 (uint8 or float) -> H x W float64 luma Y on 16..235 (Matlab rgb2ycbcr).
    A 2-D input is taken to be Y already."""
    a = _as_float(img)
    if a.ndim == 2:
        return a
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {a.shape}")
    return 16.0 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0


def shave(a: np.ndarray, border: int) -> np.ndarray:
    """Crop ``border`` pixels from each side of the first two axes."""
    if border <= 0:
        return a
    if a.shape[0] <= 2 * border or a.shape[1] <= 2 * border:
        raise ValueError(f"image {a.shape[1]}x{a.shape[0]} is too small to crop a {border}-pixel border")
    return a[border:-border, border:-border]


def modcrop(img: Image.Image, scale: int) -> Image.Image:
    """Crop the right and bottom so that both sides are multiples of ``scale`` (papers' 'modcrop')."""
    w, h = img.size
    return img.crop((0, 0, w - w % scale, h - h % scale))


def psnr(x: ArrayLike, y: ArrayLike, peak: float = 255.0) -> float:
    """PSNR in dB = 10 log10(peak^2 / mean((x - y)^2)); +inf for identical images."""
    a, b = _as_float(x), _as_float(y)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is Matlab's fspecial('gaussian', size, sigma)."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r * r) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    # The window is separable: two 1-D passes, then keep only positions where it lies wholly inside ('valid').
    r = (len(g) - 1) // 2
    out = correlate1d(correlate1d(a, g, axis=0, mode="reflect"), g, axis=1, mode="reflect")
    return out[r:a.shape[0] - r, r:a.shape[1] - r]


def ssim(x: ArrayLike, y: ArrayLike, data_range: float = 255.0, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of two single-channel images (formula in the module docstring); needs sides >= ``window``."""
    a, b = _as_float(x), _as_float(y)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two 2-D images of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < window:
        raise ValueError(f"image {a.shape[1]}x{a.shape[0]} is smaller than the {window}x{window} SSIM window")
    g = gaussian_window_1d(window, sigma)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a * mu_a
    var_b = _filter_valid(b * b, g) - mu_b * mu_b
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def psnr_y(sr: ArrayLike, hr: ArrayLike, scale: int) -> float:
    """PSNR on the Y channel with a ``scale``-pixel border cropped (RGB 0..255 inputs of one size)."""
    return psnr(shave(rgb_to_y(sr), scale), shave(rgb_to_y(hr), scale))


def ssim_y(sr: ArrayLike, hr: ArrayLike, scale: int) -> float:
    """SSIM on the Y channel with a ``scale``-pixel border cropped (RGB 0..255 inputs of one size)."""
    return ssim(shave(rgb_to_y(sr), scale), shave(rgb_to_y(hr), scale))


def bicubic_down(hr: Image.Image, scale: int) -> Image.Image:
    """The low-resolution input: PIL bicubic (anti-aliased) reduction by ``scale`` of a modcropped image."""
    w, h = hr.size
    return hr.resize((w // scale, h // scale), Image.BICUBIC)


def bicubic_up(lr: Image.Image, scale: int) -> Image.Image:
    """The bicubic baseline: PIL bicubic enlargement by ``scale``."""
    w, h = lr.size
    return lr.resize((w * scale, h * scale), Image.BICUBIC)
