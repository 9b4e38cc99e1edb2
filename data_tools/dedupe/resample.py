"""PIL's LANCZOS resize of an 8-bit grayscale picture, bit for bit, as two matrix products.

The perceptual hashes resize each working image to four small sizes (pHash 32x32, dHash 9x8 and 8x9, wHash
64x64) for two views. Through PIL that is eight ``Image.resize`` calls, most of the hashing time. A
resize is linear: PIL computes, for each output column, normalised filter weights over a window of input columns
(``precompute_coeffs`` in Pillow's ``Resample.c``), rounds them to fixed point with 22 fractional bits, and for
each pixel sums ``pixel x weight`` in integers, adds half a unit and keeps ``clip(sum >> 22, 0, 255)``; first the
pass along one axis, then along the other on its 8-bit result: horizontal first, except that Pillow 13 and later
run the vertical pass first when the height shrinks by more than twice as many pixels as the width
(:func:`vertical_first`). Here the weights of all the sizes are stacked in one matrix per axis, so one product
does the first pass of every size and one small product per size its second pass.

Exactness: the weights are integers below 2^23 and the pixels below 256, so every sum (fewer than 2^10 terms)
is an integer far below 2^53 and float64 products compute it exactly; the floor-division by 2^22 and the clip are
PIL's. ``tests/test_dedupe_speed.py`` checks equality with ``Image.resize`` on random pictures of many sizes,
down and up, on the installed Pillow. The window, normalisation and rounding follow Pillow's ``Resample.c``
(unchanged since Pillow 4.3, 2017); the pass order is Pillow 13's rule, or always horizontal first before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import PIL

#: Pillow's fixed-point precision for 8-bit images (``PRECISION_BITS`` = 32 - 8 - 2).
PRECISION_BITS = 22
_LANCZOS_SUPPORT = 3.0


def _lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's ``lanczos_filter``: sinc(x) sinc(x / 3) on [-3, 3), 0 elsewhere."""
    out = np.sinc(x) * np.sinc(x / 3.0)  # numpy's sinc is sin(pi x) / (pi x), 1 at 0: Pillow's sinc_filter
    return np.where((x >= -_LANCZOS_SUPPORT) & (x < _LANCZOS_SUPPORT), out, 0.0)


@lru_cache(maxsize=4096)
def stacked_weights(in_size: int, out_sizes: tuple[int, ...]) -> np.ndarray:
    """The fixed-point weights PIL uses to resize one axis from ``in_size`` to each of ``out_sizes`` pixels with
    LANCZOS, stacked: a ``(sum(out_sizes), in_size)`` float64 array of integers (x 2^-22 = the filter weights).

    As Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc``: scale = in / out, filterscale = max(scale, 1),
    support = 3 x filterscale; output pixel i is centred at (i + 0.5) x scale and reads input pixels
    [int(centre - support + 0.5), int(centre + support + 0.5)) clipped to the image, with weight
    lanczos((x - centre + 0.5) x (1 / filterscale)), normalised by their sum (added left to right, as in C),
    then rounded half away from zero to 22 bits. Every row of every size at once, on each row's window only
    (the weights are built for every new size a data set brings, so their cost counts).
    """
    counts = np.asarray(out_sizes)
    scale = np.repeat(in_size / counts, counts)  # per output row
    filterscale = np.maximum(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    ksize = max(math.ceil(_LANCZOS_SUPPORT * max(in_size / n, 1.0)) * 2 + 1 for n in out_sizes)  # Pillow's ksize
    centre = (np.concatenate([np.arange(n) for n in out_sizes]) + 0.5) * scale
    lo = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)  # C's (int) truncates toward zero
    hi = np.minimum(np.trunc(centre + support + 0.5), in_size).astype(np.int64)
    index = lo[:, None] + np.arange(ksize)  # (rows, ksize): each output pixel's window, as in C
    inside = index < hi[:, None]
    w = np.where(inside, _lanczos((index - centre[:, None] + 0.5) * (1.0 / filterscale)[:, None]), 0.0)
    total = np.cumsum(w, axis=1)[:, -1:]  # added left to right, like the C loop (the zeros add nothing)
    w = np.divide(w, total, out=w, where=total != 0.0)
    scaled = w * (1 << PRECISION_BITS)
    fixed = np.where(scaled < 0, np.ceil(scaled - 0.5), np.floor(scaled + 0.5))  # (int)(x -+ 0.5) in C
    weights = np.zeros((len(centre), in_size))
    rows = np.broadcast_to(np.arange(len(centre))[:, None], index.shape)
    weights[rows[inside], index[inside]] = fixed[inside]
    return weights


def _fixed_point_to_uint8(sums: np.ndarray) -> np.ndarray:
    # PIL's clip8: (sum + 2^21) >> 22, clipped to 0..255, in place (floats holding exact integers; x 2^-22 is exact).
    sums += 1 << (PRECISION_BITS - 1)
    sums *= 1.0 / (1 << PRECISION_BITS)
    np.floor(sums, out=sums)
    return np.clip(sums, 0, 255, out=sums)


#: Pillow 13 chose the pass order by the shrink (``ImagingResampleInner``); earlier versions always went
#: horizontal first.
_PILLOW_ORDERS_PASSES = int(PIL.__version__.split(".")[0]) >= 13


def vertical_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Whether the installed Pillow resizes ``(w, h)`` to ``(ow, oh)`` vertical pass first: from Pillow 13 on,
    when ``h - oh > 0`` and ``h - oh > 2 (w - ow)`` (to make the horizontal pass cheaper)."""
    (w, h), (ow, oh) = in_size, out_size
    return _PILLOW_ORDERS_PASSES and h - oh > 0 and h - oh > 2 * (w - ow)


def resize_many(pixels: np.ndarray, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """``Image.fromarray(pixels).resize((w, h), Image.LANCZOS)`` for each ``(w, h)`` in ``sizes``, as uint8 arrays
    of shape ``(h, w)``, from a 2-D uint8 array; bit-identical to PIL (see the module docstring).

    PIL skips the pass of an axis whose size does not change; here it runs with the identity weights
    (2^22 on the diagonal), which return every pixel unchanged, so the result is the same."""
    h, w = pixels.shape
    image = pixels.astype(np.float64)
    # Every result lands in one flat buffer, so the second passes are rounded and converted in one go.
    offsets = np.cumsum([0] + [ow * oh for ow, oh in sizes])
    buffer = np.empty(int(offsets[-1]))
    slots = [buffer[offsets[k]:offsets[k + 1]].reshape(oh, ow) for k, (ow, oh) in enumerate(sizes)]
    across = [k for k, (ow, oh) in enumerate(sizes) if not vertical_first((w, h), (ow, oh))]
    down = [k for k in range(len(sizes)) if k not in across]
    if across:  # horizontal first: the horizontal passes of these sizes in one product (h, w) @ (w, sum of widths)
        first = _fixed_point_to_uint8(image @ stacked_weights(w, tuple(sizes[k][0] for k in across)).T)
        second = stacked_weights(h, tuple(sizes[k][1] for k in across))
        col = row = 0
        for k in across:
            ow, oh = sizes[k]
            np.matmul(second[row:row + oh], first[:, col:col + ow], out=slots[k])
            col += ow
            row += oh
    if down:  # vertical first: (sum of heights, h) @ (h, w), then each size's horizontal pass
        first = _fixed_point_to_uint8(stacked_weights(h, tuple(sizes[k][1] for k in down)) @ image)
        second = stacked_weights(w, tuple(sizes[k][0] for k in down))
        col = row = 0
        for k in down:
            ow, oh = sizes[k]
            np.matmul(first[row:row + oh], second[col:col + ow].T, out=slots[k])
            col += ow
            row += oh
    small = _fixed_point_to_uint8(buffer).astype(np.uint8)
    return [small[offsets[k]:offsets[k + 1]].reshape(oh, ow) for k, (ow, oh) in enumerate(sizes)]
