"""A low-resolution copy of a dataset: every image's shortest side reduced to N pixels (default 128).

The reference project measured how accuracy falls on small images with such a copy of its validation set.
Reduction is area interpolation (PIL's BOX filter: each output pixel is the mean of the input area it covers,
like OpenCV's INTER_AREA), the aspect ratio is kept, and images whose shortest side is already N or less are
copied byte for byte. Output files keep their relative path, name and format (JPEG at ``quality``), and are
upright (EXIF orientation applied before resizing).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Optional

from data_tools.parallel import Progress, parallel_map
from ws_dan.common.dataset_folders import scan_dataset
from ws_dan.common.images import DEFAULT_MAX_PIXELS, UnreadableImageError, open_image, read_image_info
from ws_dan.common.io import InputError
from ws_dan.common.outputs import copy_file, finish_output_dir, output_path, prepare_output_dir, save_image

LOG = logging.getLogger(__name__)

DEFAULT_SIZE = 128
FIELDS = ("path", "action", "width", "height", "new_width", "new_height", "reason")
#: PIL format -> save options for a resized image (the format is kept; GIF becomes PNG data under its own name
#: would be confusing, so a GIF stays a GIF with an adaptive palette).
_SAVE = {"JPEG": ("JPEG", "quality"), "MPO": ("JPEG", "quality"), "PNG": ("PNG", None), "WEBP": ("WEBP", "quality"),
         "BMP": ("BMP", None), "TIFF": ("TIFF", None), "GIF": ("GIF", None)}


def target_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the shortest side ``size`` and the aspect ratio kept (rounded, at least 1)."""
    if min(width, height) <= size:
        return width, height
    scale = size / min(width, height)
    if width <= height:
        return size, max(1, round(height * scale))
    return max(1, round(width * scale)), size


def downsample_file(src: Path, dst: Path, size: int = DEFAULT_SIZE, quality: int = 95,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Write ``src`` reduced (or copied, when already small) to ``dst``; returns a row of the manifest.

    Unreadable files give a row with action ``skipped`` and the reason instead of raising.
    """
    src, dst = Path(src), Path(dst)
    row = {"action": "", "width": "", "height": "", "new_width": "", "new_height": "", "reason": ""}
    try:
        info = read_image_info(src, max_pixels)
        row.update(width=info.width, height=info.height)
        new = target_size(info.width, info.height, size)
        if new == (info.width, info.height):
            copy_file(src, dst)
            row.update(action="copied", new_width=info.width, new_height=info.height)
            return row
        image = open_image(src, max_pixels)
        small = image.resize(new, resample=_box())
        fmt, option = _SAVE.get(info.format, ("PNG", None))
        params = {option: quality} if option else {}
        save_image(small, dst, fmt, **params)
        row.update(action="resized", new_width=new[0], new_height=new[1])
    except UnreadableImageError as e:
        row.update(action="skipped", reason=e.reason)
    except OSError as e:
        row.update(action="skipped", reason=f"cannot read or write: {e.strerror or e}")
    return row


def _box():
    from PIL import Image

    return Image.Resampling.BOX if hasattr(Image, "Resampling") else Image.BOX


def _worker(job: tuple, size: int, quality: int) -> dict:
    src, dst, rel = job
    return {"path": rel, **downsample_file(src, dst, size, quality)}


def downsample_dataset(data_dir, output_dir, size: int = DEFAULT_SIZE, quality: int = 95,
                       workers: Optional[int] = None, progress: Progress = False, strict: bool = False,
                       overwrite: bool = False) -> dict:
    """Copy ``data_dir`` to ``output_dir`` with every image's shortest side at most ``size`` pixels.

    Writes ``downsample_manifest.csv`` (path, action resized/copied/skipped, sizes before and after, reason)
    and ``downsample_report.json``. Unreadable images are skipped and listed; ``strict`` raises
    :class:`~ws_dan.common.images.UnreadableImageError` at the first. A run interrupted by Ctrl-C is completed by
    running the same command again (finished files are kept).
    """
    from ws_dan.common.io import write_csv, write_json

    if size < 1:
        raise InputError(f"--size {size}: expected a positive number of pixels")
    if not 1 <= quality <= 100:
        raise InputError(f"--quality {quality}: expected 1 to 100")
    data_dir, out = Path(data_dir), Path(output_dir)
    images, skipped = scan_dataset(data_dir)
    if not images:
        raise InputError(f"{data_dir}: expected images, found none")
    settings = {"data_dir": str(data_dir.resolve()), "size": size, "quality": quality}
    resuming = prepare_output_dir(out, [data_dir], overwrite=overwrite, tool="downsample", settings=settings)
    jobs, rows = [], []
    for img in images:
        dst = output_path(out, img.rel)  # a symlinked folder in the output is refused, not written through
        if resuming and dst.is_file():  # written atomically, so complete
            rows.append({"path": img.rel.as_posix(), "action": "already_there", "width": "", "height": "",
                         "new_width": "", "new_height": "", "reason": ""})
            continue
        jobs.append((img.path, dst, img.rel.as_posix()))
    for row in parallel_map(partial(_worker, size=size, quality=quality), jobs, workers=workers, progress=progress,
                            desc="downsampling"):
        if strict and row["action"] == "skipped":
            raise UnreadableImageError(data_dir / row["path"], row["reason"])
        rows.append(row)
    rows.sort(key=lambda r: r["path"])
    write_csv(out / "downsample_manifest.csv", rows, FIELDS)
    counts = {a: sum(r["action"] == a for r in rows) for a in ("resized", "copied", "skipped", "already_there")}
    summary = {"data_dir": str(data_dir), "output_dir": str(out), "size": size, "images": len(images), **counts,
               "not_images": len(skipped),
               "skipped_files": [{"path": r["path"], "reason": r["reason"]} for r in rows if r["action"] == "skipped"]}
    write_json(out / "downsample_report.json", summary)
    finish_output_dir(out)
    return summary


def summary_lines(summary: dict, noun: str = "copy") -> list[str]:
    """The lines a script prints after :func:`downsample_dataset`: counts, the first skipped files, where it went."""
    from ws_dan.common.tables import format_table

    keys = ("images", "resized", "copied", "skipped", "already_there", "not_images")
    lines = [format_table([[k, summary[k]] for k in keys], ["images", "count"])]
    lines += [f"  skipped {f['path']}: {f['reason']}" for f in summary["skipped_files"][:10]]
    lines.append(f"{noun} with shortest side <= {summary['size']} px in {summary['output_dir']} "
                 "(manifest: downsample_manifest.csv)")
    return lines


def downsample_command(args: Any, noun: str = "copy") -> dict:
    """The whole of ``scripts/downsample.py`` and ``scripts/prepare_cache.py`` once parsed (their flags:
    ``data_tools.flags.add_downsample_flags``): :func:`downsample_dataset`, bad input or an unreadable image with
    ``--strict`` as one ``error:`` line, Ctrl-C as how to finish, then :func:`summary_lines` printed, ``noun``
    naming what was made ("copy", "cache"). Returns the summary."""
    from ws_dan.common.runtime import RERUN_TO_FINISH, job_errors, setup_logging

    setup_logging(verbose=args.verbose)
    with job_errors(args.output_dir, RERUN_TO_FINISH):
        s = downsample_dataset(args.data_dir, args.output_dir, size=args.size, quality=args.quality,
                               workers=args.workers, progress=args.progress, strict=args.strict,
                               overwrite=args.overwrite)
    print("\n".join(summary_lines(s, noun)))
    return s
