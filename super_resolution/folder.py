"""Enlarge the small images of a folder tree (the engine of ``scripts/super_resolve.py``).

Rules:

* an image is enlarged when its area w x h is below ``max_area`` (default 128 x 256 = 32768, the reference
  project's trigger); the other images are copied byte for byte;
* the tree is mirrored: ``src/a/b.jpg`` -> ``dst/a/b.jpg``, same name and file format (JPEG re-encoded at
  quality 95, PNG lossless...); files that are not images are left out and counted;
* ``in_place=True`` replaces each enlarged original by its enlargement (larger images stay untouched); a
  symlinked original is replaced by the enlarged file, its target is never written through;
* without ``in_place`` the output folder must lie outside the input folder and not contain it (links resolved,
  ``ws_dan.common.outputs.check_not_nested``), checked before anything is written; a symlinked folder inside the output
  is refused rather than written through (``ws_dan.common.outputs.output_path``);
* every file is written to a temporary file in the destination folder and renamed over the target
  (``ws_dan.common.io.atomic_write``), so an interruption or a failed write leaves either the old file or the new one,
  never a half-written file, and no temporary file behind;
* an unreadable image is skipped and counted (``strict=True``: the error is raised instead).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
from PIL import Image

from ws_dan.common.images import IMAGE_EXTENSIONS, UnreadableImageError, find_images, open_image, sniff_format
from ws_dan.common.io import InputError, PathLike, atomic_write
from ws_dan.common.outputs import check_not_nested, output_path

from .inference import DEFAULT_OVERLAP, DEFAULT_TILE, super_resolve_image

log = logging.getLogger(__name__)

DEFAULT_MAX_AREA = 128 * 256

#: sniffed format -> (PIL format name, save options)
_SAVE = {"jpeg": ("JPEG", {"quality": 95}), "png": ("PNG", {}), "bmp": ("BMP", {}), "gif": ("GIF", {}),
         "webp": ("WEBP", {"quality": 95}), "tiff": ("TIFF", {})}


@dataclass
class FolderSummary:
    """What :func:`super_resolve_folder` did."""

    enlarged: int = 0
    copied: int = 0          # at or above the area threshold: copied unchanged (in place: left as they are)
    failed: int = 0          # unreadable images, or writes that failed
    not_images: int = 0      # files that are not images (not copied)
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"enlarged": self.enlarged, "copied": self.copied, "failed": self.failed,
                "not_images": self.not_images, "seconds": round(self.seconds, 2),
                "failures": [{"path": p, "reason": r} for p, r in self.failures]}


def needs_enlarging(size: tuple[int, int], max_area: int) -> bool:
    """True when the image's area w * h is strictly below ``max_area``."""
    return size[0] * size[1] < max_area


def _atomic_replace(target: Path, write: Callable[[object], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``target`` (``ws_dan.common.io.atomic_write``), renamed over it.

    A regular ``target`` keeps its permission bits (an in-place enlargement is the same file to its owner); a
    symlinked one is replaced by the new file, so the link's target is never written.
    """
    mode = None if target.is_symlink() or not target.exists() else target.stat().st_mode & 0o7777
    with atomic_write(target, "wb") as f:
        write(f)
    if mode is not None:
        os.chmod(target, mode)


def save_image(img: Image.Image, path, fmt: str) -> None:
    """Save ``img`` to ``path`` (a path or a binary file) in the sniffed format ``fmt`` ('jpeg', 'png', ...)."""
    pil_format, options = _SAVE.get(fmt, ("PNG", {}))
    img.save(path, format=pil_format, **options)


def check_not_output_of(dst: PathLike, src: PathLike) -> None:
    """Refuse (:class:`~ws_dan.common.io.InputError`) a mirror folder ``dst`` that is ``src``, inside or around it."""
    if Path(dst).resolve() == Path(src).resolve():
        raise InputError(f"{dst}: the output folder is the input folder; use --in-place to overwrite the originals")
    check_not_nested(dst, [src])


def _copy_into(path: Path, f) -> None:
    with open(path, "rb") as src:
        shutil.copyfileobj(src, f)


def _note_skipped(skipped: list, src: Path, strict: bool, summary: FolderSummary) -> None:
    """Count the files find_images passed over: an image-named file that is empty or not an image is an
    unreadable image (strict: an error); anything else (a CSV, a README) is simply not ours to copy."""
    for item in skipped:
        if item.path.suffix.lower() in IMAGE_EXTENSIONS:
            if strict:
                raise UnreadableImageError(item.path, item.reason)
            summary.failed += 1
            summary.failures.append((str(item.path.relative_to(src)), item.reason))
            log.warning("skipped %s: %s", item.path, item.reason)
        else:
            summary.not_images += 1
    if summary.not_images:
        log.info("%d file(s) under %s are not images and are not copied", summary.not_images, src)


def _enlarge_one(path: Path, target: Path, model: nn.Module, scale: int, max_area: int, tile: int, overlap: int,
                 device: Optional[Union[str, torch.device]], in_place: bool) -> bool:
    """Write ``path`` to ``target`` enlarged when below ``max_area``, else copied (in place: left as it is);
    whether it was enlarged."""
    img = open_image(path)
    if not needs_enlarging(img.size, max_area):
        if not in_place:
            _atomic_replace(target, lambda f: _copy_into(path, f))
        return False
    big = super_resolve_image(model, img, scale, tile=tile, overlap=overlap, device=device)
    fmt = sniff_format(path) or "png"
    _atomic_replace(target, lambda f: save_image(big, f, fmt))
    return True


def _failed(summary: FolderSummary, rel: Path, reason: str, *warning) -> None:
    """One image not done: counted, listed with ``reason`` and logged (``warning``: the log call's arguments)."""
    summary.failed += 1
    summary.failures.append((str(rel), reason))
    log.warning(*warning)


def super_resolve_folder(src: PathLike, dst: Optional[PathLike], model: nn.Module, scale: int,
                         max_area: int = DEFAULT_MAX_AREA, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP,
                         device: Optional[Union[str, torch.device]] = None, in_place: bool = False,
                         strict: bool = False, progress: bool = True) -> FolderSummary:
    """Enlarge every image under ``src`` whose area is below ``max_area``; see the module docstring.

    ``dst`` is the mirror folder (ignored and may be None with ``in_place=True``). Refuses, before writing
    anything, an output folder that is ``src``, lies inside it or contains it, unless ``in_place``
    (:class:`~ws_dan.common.io.InputError`, a ValueError).
    """
    from tqdm.auto import tqdm

    src = Path(src)
    if in_place:
        dst = src
    elif dst is None:
        raise ValueError("an output folder is needed unless in_place=True")
    else:
        dst = Path(dst)
        check_not_output_of(dst, src)
    t0 = time.time()
    images, skipped = find_images(src)
    summary = FolderSummary()
    _note_skipped(skipped, src, strict, summary)
    for path in tqdm(images, desc="super-resolve", unit="img", disable=not progress):
        rel = path.relative_to(src)
        try:
            target = path if in_place else output_path(dst, rel)
            if _enlarge_one(path, target, model, scale, max_area, tile, overlap, device, in_place):
                summary.enlarged += 1
            else:
                summary.copied += 1
        except UnreadableImageError as e:
            if strict:
                raise
            _failed(summary, rel, e.reason, "skipped %s: %s", path, e.reason)
        except InputError as e:  # a symlinked folder inside the output: refused, nothing written there
            if strict:
                raise
            _failed(summary, rel, str(e), "not written: %s", e)
        except OSError as e:  # a failed write (disk full, permissions): the original is intact
            if strict:
                raise
            _failed(summary, rel, f"write failed: {e}", "could not write %s: %s", target, e)
    summary.seconds = time.time() - t0
    return summary
