"""Image I/O shared by every tool and by the data loaders.

Three rules, so that a dataset of messy real photos behaves the same everywhere:

* A file is an image because of its bytes, not its name: :func:`sniff_format` reads the magic number, so a
  PNG saved as ``.jpg`` is found and a ``.jpg`` that is really an HTML error page is not.
* :func:`open_image` always gives an upright RGB picture: EXIF orientation applied, CMYK / palette /
  grayscale / 16-bit converted, transparency composited on white (a transparent cut-out turned black would be
  a different picture), and the whole file decoded so that a truncated file fails here, not in a worker.
* Every failure is an :class:`UnreadableImageError` naming the path and the reason, so long jobs can skip and
  count bad files and short ones can stop with a message a person understands.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ws_dan.common.io import PathLike

#: Decompression-bomb limit (pixels). Larger than any real photo (a 16k x 16k panorama is 268 MP) but small
#: enough that a crafted 1-pixel-per-byte PNG cannot exhaust memory.
DEFAULT_MAX_PIXELS = 256 * 1024 * 1024

#: Extensions we expect image files to have; used only to warn about mismatches, never to decide.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: PathLike, reason: str = ""):
        # One-argument form: a DataLoader worker's exception is re-raised in the main process as
        # type(message), the message holding the worker's traceback; keep its last line, the original error.
        if not reason and "\n" in str(path):
            last = str(path).strip().splitlines()[-1].split("UnreadableImageError: ", 1)[-1]
            path, _, reason = last.partition(": ")
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if reason else str(path))


def sniff_format(path: PathLike) -> Optional[str]:
    """Return the image format from the file's first bytes ('jpeg', 'png', ...) or None if it is not one.

    Raises OSError if the file cannot be read at all (permissions, a folder, a broken link).
    """
    with open(path, "rb") as f:
        head = f.read(16)
    return sniff_bytes(head)


def sniff_bytes(head: bytes) -> Optional[str]:
    """Image format of a byte string's first 16 bytes (see :func:`sniff_format`)."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


@dataclass(frozen=True)
class SkippedFile:
    """A file met while scanning that is not a usable image, and why."""

    path: Path
    reason: str


def _walk_files(root: Path) -> Iterator[Path]:
    # os.walk without followlinks cannot loop; we still yield symlinked *files* (a common way to build splits).
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def find_images(root: PathLike, recursive: bool = True) -> tuple[list[Path], list[SkippedFile]]:
    """List the image files under ``root`` (sorted), sniffing each file's content.

    Returns ``(images, skipped)`` where ``skipped`` holds every non-image or unreadable file with the
    reason. Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are ignored silently.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: expected a folder of images, found {_describe(root)}")
    files: Iterable[Path]
    if recursive:
        files = _walk_files(root)
    else:
        files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    images: list[Path] = []
    skipped: list[SkippedFile] = []
    for path in files:
        try:
            if path.stat().st_size == 0:
                skipped.append(SkippedFile(path, "empty file (0 bytes)"))
                continue
            kind = sniff_format(path)
        except OSError as e:
            skipped.append(SkippedFile(path, f"cannot read file: {e.strerror or e}"))
            continue
        if kind is None:
            skipped.append(SkippedFile(path, "not an image (unrecognised file signature)"))
        else:
            images.append(path)
    return images, skipped


def _describe(path: Path) -> str:
    if not path.exists():
        return "nothing (the path does not exist)"
    if path.is_file():
        return "a file"
    return "something that is not a folder"


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB the way a person would see the picture."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: PIL's convert() clips to 0..255 instead of scaling, which whitens the image.
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    has_alpha = im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int, corrupt: str) -> Iterator[Image.Image]:
    """Open ``path`` with PIL, refuse over-sized images, and turn every failure inside the block into an
    :class:`UnreadableImageError` naming the path (``corrupt`` describes a decode error)."""
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) between MAX_IMAGE_PIXELS and twice that; we check size ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise UnreadableImageError(
                        path, f"{w}x{h} pixels exceeds the limit of {max_pixels} (possible decompression bomb)"
                    )
                yield im
    except UnreadableImageError:
        raise
    except FileNotFoundError:
        raise UnreadableImageError(path, "file not found") from None
    except IsADirectoryError:
        raise UnreadableImageError(path, "is a folder, expected an image file") from None
    except UnidentifiedImageError:
        raise UnreadableImageError(path, _unidentified_reason(path)) from None
    except Image.DecompressionBombError as e:
        raise UnreadableImageError(path, f"too many pixels (possible decompression bomb): {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL reports truncation as OSError("image file is truncated ...") and bad headers as SyntaxError.
        raise UnreadableImageError(path, f"{corrupt} ({e})") from None


def open_image(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, draft: Optional[int] = None) -> Image.Image:
    """Decode ``path`` fully into an upright RGB :class:`PIL.Image.Image`.

    EXIF orientation is applied, any mode is converted to RGB (alpha over white), animated GIFs give
    their first frame. Raises :class:`UnreadableImageError` (naming the path and the reason) for missing,
    empty, truncated, corrupt, non-image and over-sized files.

    ``draft``: when given, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (the decoder's DCT scaling, see
    :func:`decode_image`) as long as its shorter side stays at least ``draft`` pixels; other formats decode in
    full. The returned picture is then smaller than the file's.
    """
    return decode_image(path, max_pixels=max_pixels, draft=draft).image


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture and what the file holds at full resolution (see :func:`decode_image`)."""

    image: Image.Image  # upright; RGB, or L when decoded with gray=True
    full_size: tuple[int, int]  # upright (width, height) of the full-resolution picture
    scale: int  # 1, 2, 4 or 8: how much the decoder scaled the picture down (1: decoded in full)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag, 1 (upright) when absent or unreadable."""
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a malformed EXIF block must not hide an otherwise readable image
        return 1


def decode_image(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS, draft: Optional[int] = None,
                 gray: bool = False) -> DecodedImage:
    """Decode ``path`` like :func:`open_image`, optionally at reduced scale and in grayscale, and say at what scale.

    ``draft`` (pixels): a JPEG is decoded with libjpeg's DCT scaling (PIL's ``Image.draft``) at the largest
    factor of 2, 4 or 8 that keeps its shorter side at least ``draft`` pixels. The scaled decoder skips most of
    the inverse DCT, upsampling and colour conversion work (the whole entropy-coded stream is still read, so a
    truncated file still fails here), and its 1/8 scale is exactly the mean of each 8x8 block; the picture is
    close to the full decode reduced by the same factor (:meth:`PIL.Image.Image.reduce`). Other formats have no
    such shortcut and decode in full. ``gray``: return a grayscale (``L``) picture; a colour JPEG then decodes only
    its luma channel (JPEG's Y is the same ITU-R 601 weighting as PIL's RGB -> L, up to rounding), every other
    file is made RGB first (alpha over white, CMYK converted) and then gray, as ``open_image(...).convert("L")``.

    ``full_size`` is the upright size of the full-resolution picture (what :func:`open_image` would return),
    ``scale`` the factor applied by the decoder. Raises :class:`UnreadableImageError` like :func:`open_image`.
    """
    path = Path(path)
    with _opened(path, max_pixels, "corrupt or truncated image") as im:
        im.seek(0)
        width, height = im.size
        scale = 1
        if draft is not None and im.format in ("JPEG", "MPO"):
            factor = 1
            while factor < 8 and min(width, height) // (2 * factor) >= max(1, int(draft)):
                factor *= 2
            if factor > 1 or (gray and im.mode == "RGB"):
                # Request the size this factor gives, rounded down: PIL then picks exactly ``factor``.
                request = (max(1, width // factor), max(1, height // factor))
                result = im.draft("L" if gray and im.mode == "RGB" else im.mode, request)
                if result is not None:
                    scale = max(1, round(width / result[1][2]))
        im.load()  # decode now: truncated data raises OSError here
        if _orientation(im) in (5, 6, 7, 8):  # displayed rotated by 90 degrees
            width, height = height, width
        upright = ImageOps.exif_transpose(im)
        if gray:
            out = upright if upright.mode == "L" else _to_rgb(upright).convert("L")
        else:
            out = _to_rgb(upright)
        return DecodedImage(out, (width, height), scale)


def _unidentified_reason(path: Path) -> str:
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    kind = sniff_format(path)
    if kind is not None:
        return f"corrupt {kind.upper()} file (its header cannot be parsed)"
    return "not an image (unrecognised file signature)"


def check_image(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Optional[str]:
    """Return why ``path`` is unreadable, or None when it decodes."""
    try:
        open_image(path, max_pixels=max_pixels)
    except UnreadableImageError as e:
        return e.reason
    return None


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says, without decoding the pixels (see :func:`read_image_info`)."""

    path: Path
    format: str  # PIL's name: "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO" ...
    mode: str  # PIL's mode as stored: "RGB", "L", "CMYK", "P", "RGBA", "I;16" ...
    width: int  # as displayed, i.e. after the EXIF orientation
    height: int
    frames: int  # more than 1 for animated GIF / WebP and multi-page TIFF
    orientation: int  # EXIF orientation tag, 1 (upright) when absent


def read_image_info(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read format, mode, displayed size and frame count from the header only (fast: no pixel decoding).

    A file whose header parses may still be truncated further on; :func:`open_image` / :func:`check_image`
    decode the whole file. Raises :class:`UnreadableImageError` like :func:`open_image`.
    """
    path = Path(path)
    with _opened(path, max_pixels, "corrupt image header") as im:
        w, h = im.size
        orientation = _orientation(im)
        if orientation in (5, 6, 7, 8):  # these orientations display the image rotated by 90 degrees
            w, h = h, w
        return ImageInfo(path, im.format or "", im.mode, w, h, int(getattr(im, "n_frames", 1) or 1), orientation)
