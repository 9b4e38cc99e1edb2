"""Hashing for the duplicate finder: a pixel digest for exact duplicates, perceptual hashes for near ones.

* **Exact** duplicates have identical pixels after decoding (:func:`pixel_digest`: SHA-256 of the upright RGB
  array and its size), so a JPEG re-saved as PNG, or the same picture with different metadata, is exact.
* **Near** duplicates are found with four 64-bit perceptual hashes, computed on the grayscale image: pHash (low
  DCT frequencies), dHash (horizontal gradient signs), vertical dHash and wHash (Haar wavelet), the definitions
  of the ``imagehash`` library. Each is computed twice, on the whole image and on its centre with 5% cut from
  every side (:func:`image_hashes`); ``data_tools.dedupe.neighbours`` compares them.

  Why: one pHash (imagededup's method) misses slightly cropped copies, because a 5% border crop rescales the
  whole picture by 10% and moves every low frequency. Comparing one image's centre with the other's whole
  undoes exactly that rescaling. Summing four different hashes lets their small, mostly independent
  disagreements (a rotation, JPEG noise, brightness) average out, while unrelated photos stay far apart in all
  four. Grayscale hashes make colour changes (a grayscale copy) irrelevant.

Speed. The hashes look at 64x64 pixels at most (wHash; pHash 32x32, dHash 9x8), so they are computed
on a *working image*: the gray picture reduced by the largest power of two that keeps its shorter side at least
:data:`HASH_WORKING_SIZE` (56) pixels. A file is decoded straight to that size where it can be: a JPEG with the
decoder's DCT scaling (1/2, 1/4, 1/8, luma only; ``ws_dan.common.images.decode_image``), the rest of the factor by
:meth:`PIL.Image.Image.reduce` (box means). Because reduce(a) then reduce(b) has exactly the size of reduce(a*b),
the draft-decoded working image has the same size as the full decode's and nearly the same pixels: the four
whole-image hashes of the two differ by a few bits at most (:data:`DRAFT_DEVIATION`).
The hashes themselves are imagehash's, computed from PIL's LANCZOS resizes (reproduced bit for bit as matrix
products, ``data_tools.dedupe.resample``, all four sizes of a view at once) and a few numpy operations instead of
imagehash's scipy / PyWavelets calls (whose per-call overhead was most of the hashing time): the two dHashes are
bit-identical to ``imagehash`` on the same working image; pHash (the DCT as two small matrix products) and wHash
(the Haar LL band at 8x8 of the mean-removed 64x64 picture is an increasing function of its 8x8 block sums) make
the same comparisons and differ only where imagehash's float rounding breaks exact ties at random.
The pixel digest needs the full decode: :func:`hash_images` with ``digests=False`` skips it, and
``data_tools.dedupe.neighbours.exact_candidates`` says which images need it (:func:`add_digests`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from data_tools.dedupe.resample import resize_many
from data_tools.parallel import Progress, parallel_map
from ws_dan.common.images import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    SkippedFile,
    UnreadableImageError,
    decode_image,
)

LOG = logging.getLogger(__name__)

#: The hashes, in the order of the last axis of a hash array.
HASH_NAMES = ("phash", "dhash", "dhash_vertical", "whash")
#: The two views of each image hashed, in the order of the middle axis of a hash array.
VIEW_NAMES = ("whole", "centre")
#: Fraction cut from every side for the centre view: matches copies with a border crop of about this much.
CROP_FRACTION = 0.05
#: Shorter side (pixels) the working image keeps at least: it is reduced by the largest power of two that keeps
#: this many, so its shorter side is 56 to 111 px. wHash resizes to 64x64, pHash to 32x32. The resizes cost in
#: proportion to the working image's pixels; 56 rather than 64 lets the decoder's cheapest scale, 1/8, serve the
#: common 480-px-high photo (60 px) without costing recall or precision (docs/scale.md).
HASH_WORKING_SIZE = 56
#: Largest summed Hamming distance between the four whole-image hashes of a draft-decoded JPEG and those of its
#: full decode (the measurement: docs/scale.md; tests/test_dedupe_speed.py checks it on a sample):
#: ``data_tools.dedupe.neighbours.EXACT_CANDIDATE_DISTANCE`` is built on it.
DRAFT_DEVIATION = 6

def pixel_digest(image: Image.Image) -> str:
    """SHA-256 of an RGB image's size and pixels: equal digests mean identical decoded pictures."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def _pack(bits: np.ndarray) -> int:
    """64 booleans -> the integer imagehash prints (row-major, first bit most significant)."""
    return int.from_bytes(np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes(), "big")


def working_reduction(shorter_side: int) -> int:
    """The power of two the working image is reduced by: the largest keeping ``shorter_side`` >= HASH_WORKING_SIZE."""
    factor = 1
    while shorter_side // (2 * factor) >= HASH_WORKING_SIZE:
        factor *= 2
    return factor


def _pixels(image: Image.Image) -> np.ndarray:
    # np.frombuffer on tobytes(): the same uint8 array as np.asarray(image), without the array-interface detour
    # (for these tiny pictures the per-call overhead is much of the cost).
    return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(image.height, image.width)


def _above_median(values: np.ndarray) -> int:
    # values > np.median(values) for 64 values; sorting directly is a fraction of np.median's call overhead.
    flat = values.ravel()
    ordered = np.sort(flat)
    return _pack(flat > (ordered[31] + ordered[32]) / 2)


def _dct_rows(n: int = 32, k: int = 8) -> np.ndarray:
    # scipy.fftpack.dct type II, unnormalised: y_k = 2 sum_n x_n cos(pi k (2n + 1) / (2N)); only the first k rows.
    i = np.arange(k)[:, None]
    j = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * i * (2 * j + 1) / (2 * n))


_DCT = _dct_rows()


#: The sizes each view is resized to (LANCZOS, as imagehash): pHash, dHash, vertical dHash, wHash.
HASH_SIZES = ((32, 32), (9, 8), (8, 9), (64, 64))


def _phash(small: np.ndarray) -> int:
    # imagehash.phash: 2-D DCT of the 32x32 picture, its 8x8 lowest frequencies against their median. As two small
    # matrix products (only the 8 rows needed); rounded to 1e-6 so that the float noise of a flat picture's zero
    # coefficients (imagehash gets +-1e-13 there, and random bits) reads as the ties it is.
    return _above_median(np.round(_DCT @ small.astype(np.float64) @ _DCT.T, 6))


def _dhash(small: np.ndarray) -> int:
    return _pack(small[:, 1:] > small[:, :-1])  # 9x8 -> imagehash.dhash: is each pixel brighter than its left


def _dhash_vertical(small: np.ndarray) -> int:
    return _pack(small[1:, :] > small[:-1, :])  # 8x9


def _whash(small: np.ndarray) -> int:
    # imagehash.whash(image_scale=64): Haar-decompose the 64x64 picture fully, zero the top LL (= remove the mean),
    # rebuild, decompose 3 levels and compare the 8x8 LL band with its median. That band is (block sum of 8x8
    # pixels - 64 * mean) / (8 * 255): an increasing function of the block sums, so comparing the exact integer
    # sums with their median gives the same bits (imagehash's float rounding breaks ties between equal blocks at
    # random). 64x64 rather than imagehash's default (the largest power of two that fits) was measured as
    # accurate on the benchmark at a third of the cost.
    return _above_median(small.astype(np.int64).reshape(8, 8, 8, 8).sum(axis=(1, 3)))


_HASHES = (_phash, _dhash, _dhash_vertical, _whash)  # in HASH_NAMES order, on the HASH_SIZES pictures


def _centre_box(width: int, height: int, fraction: float) -> tuple[int, int, int, int]:
    dx, dy = round(width * fraction), round(height * fraction)
    if width - 2 * dx < 8 or height - 2 * dy < 8:  # too small to crop meaningfully: the whole image stands in
        return 0, 0, width, height
    return dx, dy, width - dx, height - dy


def _centre(image: Image.Image, fraction: float) -> Image.Image:
    """The centre view of a PIL image (the box of :func:`_centre_box`)."""
    return image.crop(_centre_box(image.width, image.height, fraction))


def view_resizes(gray: Image.Image) -> list[list[np.ndarray]]:
    """Each view of a working image (:data:`VIEW_NAMES`) resized to the :data:`HASH_SIZES`: PIL's LANCZOS resizes,
    bit for bit, done as matrix products (``data_tools.dedupe.resample``: a third of the time of four
    ``Image.resize`` calls)."""
    pixels = _pixels(gray)
    x0, y0, x1, y1 = _centre_box(gray.width, gray.height, CROP_FRACTION)
    return [resize_many(view, HASH_SIZES) for view in (pixels, pixels[y0:y1, x0:x1])]


def hash_bits(resized: list[list[np.ndarray]]) -> np.ndarray:
    """The (2 views, 4 hashes) array of :func:`view_resizes`' pictures."""
    out = np.empty((len(VIEW_NAMES), len(_HASHES)), dtype=np.uint64)
    for v, smalls in enumerate(resized):
        for k, (fn, small) in enumerate(zip(_HASHES, smalls)):
            out[v, k] = fn(small)
    return out


def _working_hashes(gray: Image.Image) -> np.ndarray:
    """The (2 views, 4 hashes) array of a working image."""
    return hash_bits(view_resizes(gray))


def image_hashes(image: Image.Image) -> np.ndarray:
    """The perceptual hashes of one (fully decoded) image: ``uint64`` array of shape ``(2 views, 4 hashes)``.

    Views: :data:`VIEW_NAMES`; hashes: :data:`HASH_NAMES` (each 64 bits, packed big-endian as imagehash prints),
    computed on the working image (see the module docstring).
    """
    gray = image if image.mode == "L" else image.convert("L")
    factor = working_reduction(min(gray.size))
    return _working_hashes(gray.reduce(factor) if factor > 1 else gray)


def file_hashes(path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """The hashes of an image file decoded at the working size, and the file's full upright size.

    A JPEG is decoded with DCT scaling (``ws_dan.common.images.decode_image``) by up to 8 of the working reduction and
    reduced by the rest; since ``ceil(ceil(n / a) / b) == ceil(n / (a * b))`` the working image has exactly the
    size :func:`image_hashes` gives the full decode, and its hashes differ from those by at most a few bits
    (:data:`DRAFT_DEVIATION`). Raises :class:`~ws_dan.common.images.UnreadableImageError`.
    """
    decoded = decode_image(path, max_pixels=max_pixels, draft=HASH_WORKING_SIZE, gray=True)
    return _working_hashes(working_image(decoded)), decoded.full_size


def working_image(decoded: DecodedImage) -> Image.Image:
    """A draft decode (``decode_image(..., draft=HASH_WORKING_SIZE, gray=True)``) reduced by the rest of the
    working reduction: the working image :func:`image_hashes` computes from the full decode."""
    rest = working_reduction(min(decoded.full_size)) // decoded.scale
    return decoded.image.reduce(rest) if rest > 1 else decoded.image


@dataclass(frozen=True)
class ImageHash:
    """One hashed file; ``digest`` is None when it was not computed (``hash_file(..., digest=False)``)."""

    path: Path
    digest: Optional[str]
    hashes: np.ndarray  # (2, 4) uint64
    width: int
    height: int


def hash_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, digest: bool = True) -> ImageHash:
    """Hash ``path`` (raises UnreadableImageError).

    ``digest=True``: decode in full (:func:`~ws_dan.common.images.open_image`), take the pixel digest and the hashes of
    that picture. ``digest=False``: decode at the working size only (:func:`file_hashes`, several times faster
    for a JPEG), no digest.
    """
    if not digest:
        hashes, (w, h) = file_hashes(path, max_pixels)
        return ImageHash(Path(path), None, hashes, w, h)
    image = decode_image(path, max_pixels=max_pixels).image
    return ImageHash(Path(path), pixel_digest(image), image_hashes(image), image.width, image.height)


def _hash_worker(path: Path, max_pixels: int, digest: bool = True):
    # Runs in a worker process: return the failure instead of raising, so one bad file does not stop the pool.
    try:
        return hash_file(path, max_pixels, digest)
    except UnreadableImageError as e:
        return SkippedFile(Path(path), e.reason)
    except OSError as e:  # vanished or unreadable between listing and hashing
        return SkippedFile(Path(path), f"cannot read file: {e.strerror or e}")


def _digest_worker(path: Path, max_pixels: int):
    try:
        return pixel_digest(decode_image(path, max_pixels=max_pixels).image)
    except (UnreadableImageError, OSError) as e:
        return SkippedFile(Path(path), getattr(e, "reason", None) or str(e))


@dataclass
class HashedImages:
    """Hashes of a list of files; unreadable ones are left out and listed in ``skipped``.

    ``digests[k]`` is None where the pixel digest was not computed (``hash_images(..., digests=False)``; see
    :func:`add_digests`): such an image is pixel-identical to no other, by ``exact_candidates``' argument.
    """

    paths: list[Path]
    digests: list[Optional[str]]
    hashes: np.ndarray  # (N, 2, 4) uint64
    sizes: np.ndarray  # (N, 2) int64: width, height (full resolution, upright)
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def images_per_second(self) -> float:
        return (len(self.paths) + len(self.skipped)) / self.seconds if self.seconds > 0 else 0.0


def hash_images(paths: Sequence[Path], workers: Optional[int] = None, progress: Progress = False,
                strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, digests: bool = True) -> HashedImages:
    """Hash ``paths`` on ``workers`` processes (all cores when None).

    Unreadable files are skipped and listed with the reason; ``strict`` raises
    :class:`~ws_dan.common.images.UnreadableImageError` at the first one instead. ``digests=False`` decodes each file
    at the working size only and leaves every digest None (the duplicate finder then digests the few candidates
    with :func:`add_digests`); the default decodes in full and digests every image.
    """
    start = time.perf_counter()
    kept: list[ImageHash] = []
    skipped: list[SkippedFile] = []
    for result in parallel_map(partial(_hash_worker, max_pixels=max_pixels, digest=digests), list(paths),
                               workers=workers, progress=progress, desc="hashing"):
        if isinstance(result, SkippedFile):
            if strict:
                raise UnreadableImageError(result.path, result.reason)
            skipped.append(result)
        else:
            kept.append(result)
    hashes = np.stack([r.hashes for r in kept]) if kept else np.zeros((0, 2, 4), np.uint64)
    sizes = np.array([(r.width, r.height) for r in kept], dtype=np.int64).reshape(-1, 2)
    return HashedImages([r.path for r in kept], [r.digest for r in kept], hashes, sizes, skipped,
                        time.perf_counter() - start)


def add_digests(hashed: HashedImages, indexes: Sequence[int], workers: Optional[int] = None,
                progress: Progress = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Fill ``hashed.digests[k]`` for ``k`` in ``indexes`` (full decode + :func:`pixel_digest`), in place.

    The time is added to ``hashed.seconds``. A file that cannot be decoded again (changed or removed since it was
    hashed) keeps None, i.e. is not called exact, and is logged. Returns the number of digests computed.
    """
    todo = sorted({int(k) for k in indexes if hashed.digests[int(k)] is None})
    if not todo:
        return 0
    start = time.perf_counter()
    # Usually a handful of files: starting a process pool for them would cost more than decoding them here.
    workers = 1 if len(todo) < 16 else workers
    results = parallel_map(partial(_digest_worker, max_pixels=max_pixels), [hashed.paths[k] for k in todo],
                           workers=workers, progress=progress, desc="pixel digests")
    done = 0
    for k, result in zip(todo, results):
        if isinstance(result, SkippedFile):
            LOG.warning("%s: no pixel digest, treated as not exact: %s", result.path, result.reason)
            continue
        hashed.digests[k] = result
        done += 1
    hashed.seconds += time.perf_counter() - start
    return done
