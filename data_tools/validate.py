"""Check every file of a dataset folder and, optionally, write a clean all-JPEG copy of it.

Each file is listed with a status:

* ``not_image``: its bytes are not an image (an HTML error page saved as .jpg, a text file, an empty file);
* ``unreadable``: an image that does not decode (truncated download, corrupt header, decompression bomb);
* ``attention``: decodes, but is tiny, animated, in an odd mode (CMYK, palette, alpha, 16-bit...), not a
  JPEG, or named with the wrong extension (a PNG called .jpg);
* ``ok``: an RGB or grayscale JPEG of reasonable size.

With ``fix``, ``output_dir/fixed/`` receives a copy of the dataset a training run can use as it is: readable
JPEGs copied unchanged (or hard-linked with ``link``: a symlinked JPEG is linked as the real file, never as a
link), every other readable image re-encoded to an upright RGB JPEG (``name.jpg``, transparency
over white, as :func:`~ws_dan.common.images.open_image` decodes it), unreadable files and non-images left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

from data_tools.parallel import Progress, parallel_map
from ws_dan.common.dataset_folders import scan_dataset
from ws_dan.common.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    UnreadableImageError,
    open_image,
    read_image_info,
    sniff_format,
)
from ws_dan.common.io import InputError
from ws_dan.common.outputs import (
    copy_file,
    finish_output_dir,
    output_path,
    prepare_output_dir,
    save_image,
    unique_path,
)

LOG = logging.getLogger(__name__)

#: Modes a JPEG of a photo normally has; anything else is reported (and converted by ``fix``).
PLAIN_MODES = ("RGB", "L")
#: Extensions that fit each sniffed format.
_EXTENSIONS = {"jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"), "png": (".png",), "gif": (".gif",), "bmp": (".bmp", ".dib"),
               "webp": (".webp",), "tiff": (".tif", ".tiff")}
FIELDS = ("path", "status", "issues", "format", "mode", "width", "height", "frames", "bytes", "fixed_as", "action")


@dataclass
class FileCheck:
    """The verdict on one file."""

    path: Path
    status: str  # ok | attention | unreadable | not_image
    issues: list[str]
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    frames: int = 0
    bytes: int = 0

    @property
    def convertible(self) -> bool:
        """Readable, but not a plain RGB/grayscale JPEG under a JPEG name: ``fix`` re-encodes it."""
        return self.status in ("ok", "attention") and any(
            i.startswith(("format ", "mode ", "extension ", "animated")) for i in self.issues)


def check_file(path: Path, min_side: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS) -> FileCheck:
    """Inspect one file: content type, header, full decode, size, mode, extension."""
    path = Path(path)
    try:
        size = path.stat().st_size
        kind = sniff_format(path) if size else None
    except OSError as e:
        return FileCheck(path, "unreadable", [f"cannot read file: {e.strerror or e}"])
    if kind is None:
        return FileCheck(path, "not_image", ["empty file (0 bytes)" if size == 0 else
                                             "not an image (unrecognised file signature)"], bytes=size)
    try:
        info = read_image_info(path, max_pixels=max_pixels)
        open_image(path, max_pixels=max_pixels)  # the full decode finds truncated files
    except UnreadableImageError as e:
        return FileCheck(path, "unreadable", [e.reason], format=kind.upper(), bytes=size)
    issues = []
    if min(info.width, info.height) < min_side:
        issues.append(f"tiny ({info.width}x{info.height}, shortest side < {min_side})")
    if info.frames > 1:
        issues.append(f"animated ({info.frames} frames; the first is used)")
    if info.format not in ("JPEG", "MPO"):  # MPO: a JPEG with extra frames, as some cameras write
        issues.append(f"format {info.format}")
    if info.mode not in PLAIN_MODES:
        issues.append(f"mode {info.mode}")
    ext = path.suffix.lower()
    if ext not in _EXTENSIONS.get(kind, ()):
        issues.append(f"extension {ext or '(none)'} holds a {kind.upper()} file"
                      if ext in IMAGE_EXTENSIONS or not ext else f"extension {ext} is not an image extension")
    return FileCheck(path, "attention" if issues else "ok", issues, info.format, info.mode, info.width, info.height,
                     info.frames, size)


def _fix_worker(job: tuple, quality: int, link: bool) -> str:
    # Runs in a worker process: write one file of the fixed copy, atomically.
    src, dst, convert = job
    if convert:
        save_image(open_image(src), dst, "JPEG", quality=quality)
        return "converted"
    return copy_file(src, dst, link=link)


def validate_images(data_dir, output_dir, fix: bool = False, min_side: int = 32, quality: int = 95,
                    link: bool = False, workers: Optional[int] = None, progress: Progress = False,
                    strict: bool = False, overwrite: bool = False) -> dict:
    """Check every file under ``data_dir``; write ``validation.csv`` and ``validation_report.json`` to
    ``output_dir``, and with ``fix`` the clean copy in ``output_dir/fixed/``. Returns the summary.

    ``strict`` raises :class:`~ws_dan.common.io.InputError` at the first unreadable file or non-image.
    """
    from ws_dan.common.io import write_csv, write_json

    if not 1 <= quality <= 100:
        raise InputError(f"--quality {quality}: expected 1 to 100")
    data_dir, out = Path(data_dir), Path(output_dir)
    images, skipped = scan_dataset(data_dir)  # raises InputError for a missing folder
    if not images and not skipped:
        raise InputError(f"{data_dir}: the folder holds no files")
    settings = {"data_dir": str(data_dir.resolve()), "fix": fix, "min_side": min_side, "quality": quality}
    resuming = prepare_output_dir(out, [data_dir], overwrite=overwrite, tool="validate_images", settings=settings)
    # Non-images too: find_images already sniffed them, check_file gives them the same row format.
    files = sorted([img.path for img in images] + [s.path for s in skipped])
    checks: list[FileCheck] = []
    for c in parallel_map(partial(check_file, min_side=min_side), files, workers=workers, progress=progress,
                          desc="checking"):
        if strict and c.status in ("unreadable", "not_image"):
            raise InputError(f"{c.path}: {c.issues[0]} (--strict)")
        checks.append(c)
    fixed_as, actions = (_write_fixed(checks, data_dir, out, resuming, quality, link, workers, progress) if fix
                         else ({}, {}))
    write_csv(out / "validation.csv", _rows(checks, data_dir, fix, fixed_as), FIELDS)
    summary = {"data_dir": str(data_dir), "output_dir": str(out), "files": len(checks),
               **{s: sum(c.status == s for c in checks) for s in ("ok", "attention", "unreadable", "not_image")},
               "convertible": sum(c.convertible for c in checks), "issues": _issue_counts(checks),
               "min_side": min_side, "fix": fix}
    if fix:
        summary["fixed_dir"] = str(out / "fixed")
        summary["fixed"] = actions
    write_json(out / "validation_report.json", summary)
    finish_output_dir(out)
    return summary


def _write_fixed(checks: list[FileCheck], data_dir: Path, out: Path, resuming: bool, quality: int, link: bool,
                 workers: Optional[int], progress: Progress) -> tuple[dict[Path, str], dict[str, int]]:
    """The clean copy in ``out/fixed/``: usable files copied (or linked), convertible ones re-encoded to JPEG.
    Returns each file's place in it and the counts per action."""
    fixed_as: dict[Path, str] = {}
    actions: dict[str, int] = {}
    jobs = []
    taken: set = set()
    # Files keeping their name claim it first, so a converted a.png never takes the name of an existing a.jpg.
    usable = [c for c in checks if c.status in ("ok", "attention")]
    for c in sorted(usable, key=lambda c: (c.convertible, str(c.path))):
        rel = c.path.relative_to(data_dir)
        if c.convertible:
            tag = c.path.suffix.lower().lstrip(".") or "img"
            dst = unique_path(Path("fixed") / rel.with_suffix(".jpg"), taken, tag=tag)
        else:
            dst = unique_path(Path("fixed") / rel, taken)
        fixed_as[c.path] = dst.as_posix()
        if resuming and (out / dst).is_file():
            actions["already_there"] = actions.get("already_there", 0) + 1
            continue
        jobs.append((c.path, output_path(out, dst), c.convertible))
    for how in parallel_map(partial(_fix_worker, quality=quality, link=link), jobs, workers=workers,
                            progress=progress, desc="fixing"):
        actions[how] = actions.get(how, 0) + 1
    return fixed_as, actions


def _rows(checks: list[FileCheck], data_dir: Path, fix: bool, fixed_as: dict[Path, str]) -> list[dict]:
    """validation.csv: one row per file, with what the fixed copy did with it."""
    rows = []
    for c in checks:
        rel = c.path.relative_to(data_dir)
        action = ""
        if fix:
            action = ("re-encoded to JPEG" if c.convertible else "copied") if c.path in fixed_as else "left out"
        rows.append({"path": rel.as_posix(), "status": c.status, "issues": "; ".join(c.issues), "format": c.format,
                     "mode": c.mode, "width": c.width or "", "height": c.height or "", "frames": c.frames or "",
                     "bytes": c.bytes, "fixed_as": fixed_as.get(c.path, ""), "action": action})
    return rows


def _issue_counts(checks: list[FileCheck]) -> dict[str, int]:
    """How many files have each kind of issue (details in parentheses dropped; format and mode kept whole)."""
    by_issue: dict[str, int] = {}
    for c in checks:
        for i in c.issues:
            key = i.split(" (")[0] if not i.startswith(("format ", "mode ")) else i
            if c.status == "not_image" or c.status == "unreadable":
                key = f"{c.status}: {key}"
            by_issue[key] = by_issue.get(key, 0) + 1
    return dict(sorted(by_issue.items()))

