"""Hashing for the duplicate finder: a pixel digest for exact duplicates, perceptual hashes for near ones.

* **Exact** duplicates have identical pixels after decoding (:func:`pixel_digest`: SHA-256 of the upright RGB
  array and its size), so a JPEG re-saved as PNG, or the same picture with different metadata, is exact.
* **Near** duplicates are found with four 64-bit perceptual hashes from the ``imagehash`` library, computed on the
  grayscale image: pHash (low DCT frequencies), dHash (horizontal gradient signs), vertical dHash and wHash
  (Haar wavelet). Each is computed twice, on the whole image and on its centre with 5% cut from every side
  (:func:`image_hashes`); ``data_tools.dedupe.search`` compares them.

  Why: one pHash (imagededup's method) misses slightly cropped copies, because a 5% border crop rescales the
  whole picture by 10% and moves every low frequency. Comparing one image's centre with the other's whole
  undoes exactly that rescaling. Summing four different hashes lets their small, mostly independent
  disagreements (a rotation, JPEG noise, brightness) average out, while unrelated photos stay far apart in all
  four. Grayscale hashes make colour changes (a grayscale copy) irrelevant.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from data_tools.parallel import Progress, parallel_map
from ws_dan.images import DEFAULT_MAX_PIXELS, SkippedFile, UnreadableImageError, open_image

#: The hashes, in the order of the last axis of a hash array.
HASH_NAMES = ("phash", "dhash", "dhash_vertical", "whash")
#: The two views of each image hashed, in the order of the middle axis of a hash array.
VIEW_NAMES = ("whole", "centre")
#: Fraction cut from every side for the centre view: matches copies with a border crop of about this much.
CROP_FRACTION = 0.05
#: (view of image a, view of image b) pairings tried; the distance is the smallest.
#: Images are box-reduced to about this many pixels on the longer side before hashing: the hashes use 32x32 or
#: smaller versions, and reducing first makes hashing a large photo several times faster.
HASH_WORKING_SIZE = 256


def pixel_digest(image: Image.Image) -> str:
    """SHA-256 of an RGB image's size and pixels: equal digests mean identical decoded pictures."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def _pack(bits: np.ndarray) -> np.uint64:
    return np.frombuffer(np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes(), dtype=">u8")[0].astype(np.uint64)


def _centre(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * fraction), round(h * fraction)
    if w - 2 * dx < 8 or h - 2 * dy < 8:  # too small to crop meaningfully: the whole image stands in
        return image
    return image.crop((dx, dy, w - dx, h - dy))


def image_hashes(image: Image.Image) -> np.ndarray:
    """The perceptual hashes of one image: ``uint64`` array of shape ``(2 views, 4 hashes)``.

    Views: :data:`VIEW_NAMES`; hashes: :data:`HASH_NAMES` (each 64 bits, packed big-endian as imagehash prints).
    """
    import imagehash

    gray = image.convert("L")
    longest = max(gray.size)
    if longest > 2 * HASH_WORKING_SIZE:
        gray = gray.reduce(longest // HASH_WORKING_SIZE)
    # wHash on a 64x64 version: same accuracy on the benchmark as imagehash's default scale (the largest power of
    # two that fits), at a third of the cost; it was two thirds of the hashing time.
    funcs = (imagehash.phash, imagehash.dhash, imagehash.dhash_vertical, partial(imagehash.whash, image_scale=64))
    out = np.empty((len(VIEW_NAMES), len(funcs)), dtype=np.uint64)
    for v, view in enumerate((gray, _centre(gray, CROP_FRACTION))):
        for k, fn in enumerate(funcs):
            out[v, k] = _pack(fn(view).hash)
    return out


@dataclass(frozen=True)
class ImageHash:
    """One hashed file."""

    path: Path
    digest: str
    hashes: np.ndarray  # (2, 4) uint64
    width: int
    height: int


def hash_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHash:
    """Decode ``path`` with :func:`~ws_dan.images.open_image` and hash it (raises UnreadableImageError)."""
    image = open_image(path, max_pixels=max_pixels)
    return ImageHash(Path(path), pixel_digest(image), image_hashes(image), image.width, image.height)


def _hash_worker(path: Path, max_pixels: int):
    # Runs in a worker process: return the failure instead of raising, so one bad file does not stop the pool.
    try:
        return hash_file(path, max_pixels)
    except UnreadableImageError as e:
        return SkippedFile(Path(path), e.reason)
    except OSError as e:  # vanished or unreadable between listing and hashing
        return SkippedFile(Path(path), f"cannot read file: {e.strerror or e}")


@dataclass
class HashedImages:
    """Hashes of a list of files; unreadable ones are left out and listed in ``skipped``."""

    paths: list[Path]
    digests: list[str]
    hashes: np.ndarray  # (N, 2, 4) uint64
    sizes: np.ndarray  # (N, 2) int64: width, height
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def images_per_second(self) -> float:
        return (len(self.paths) + len(self.skipped)) / self.seconds if self.seconds > 0 else 0.0


def hash_images(paths: Sequence[Path], workers: Optional[int] = None, progress: Progress = False,
                strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> HashedImages:
    """Hash ``paths`` on ``workers`` processes (all cores when None).

    Unreadable files are skipped and listed with the reason; ``strict`` raises
    :class:`~ws_dan.images.UnreadableImageError` at the first one instead.
    """
    start = time.perf_counter()
    kept: list[ImageHash] = []
    skipped: list[SkippedFile] = []
    for result in parallel_map(partial(_hash_worker, max_pixels=max_pixels), list(paths), workers=workers,
                               progress=progress, desc="hashing"):
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

