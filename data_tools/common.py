"""Plumbing shared by the data curation tools: safe output folders, atomic copies and moves, dataset layout.

The rules every tool follows, so that none of them can damage a user's data by accident:

* Outputs go to a folder that is new or empty (:func:`prepare_output_dir`). A folder inside an input folder is
  refused (the tool would find its own output on the next run, or copy a dataset into itself), and so is an
  input folder inside the output folder (``--overwrite`` would then write over the input).
* Every file appears under its final name only once complete (:func:`copy_file`, :func:`save_image`,
  ``ws_dan.utils.atomic_write``): it is written under a hidden temporary name in the same folder and renamed.
  Ctrl-C therefore leaves complete files and, at worst, a hidden ``.*.tmp`` file.
* A run that stops half-way leaves a marker file (:data:`MARKER_NAME`) in its output folder; the same tool with
  the same settings may then write into that folder again without ``--overwrite`` and finishes the job, skipping
  what is already done.

This module imports only the standard library at the top, so worker processes that import it start fast.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar, Union

from ws_dan.utils import default_workers# noqa: F401  (default_workers is re-exported)
from ws_dan.io import atomic_write

from ws_dan.io import PathLike
T = TypeVar("T")
R = TypeVar("R")

LOG = logging.getLogger("ws_dan.data_tools")

#: Folder names recognised as splits of a dataset (``root/<split>/<class>/...``).
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")

#: Left in an output folder while a tool runs; present after a crash or Ctrl-C, removed when the job completes.
MARKER_NAME = ".incomplete.json"

#: A progress report: ``True`` for a tqdm bar, ``False`` for none, or a callable ``(done, total, description)``.
Progress = Union[bool, Callable[[int, int, str], None]]


class DataToolError(ValueError):
    """A problem with the user's input or folders; the message names the path and what was expected."""


# ---------------------------------------------------------------------------------------------------------------
# Output folders


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_nested(output_dir: PathLike, inputs: Sequence[PathLike]) -> None:
    """Refuse an output folder inside an input folder, equal to it, or containing it (symlinks resolved)."""
    out = Path(output_dir).resolve()
    for inp in inputs:
        src = Path(inp).resolve()
        if _is_within(out, src):
            raise DataToolError(
                f"{output_dir}: the output folder is inside the input folder {inp}; choose a folder outside it")
        if _is_within(src, out):
            raise DataToolError(
                f"{output_dir}: the output folder contains the input folder {inp}; choose a new, separate folder")


def prepare_output_dir(output_dir: PathLike, inputs: Sequence[PathLike] = (), *, overwrite: bool = False,
                       tool: str = "", settings: Optional[dict] = None) -> bool:
    """Check and create ``output_dir`` for ``tool``; returns True when it resumes an interrupted run.

    Refused (:class:`DataToolError`): an output folder nested with an input folder; a path that is a file; a
    non-empty folder, unless ``overwrite`` or the folder holds the marker of an interrupted run of the same
    ``tool`` with the same ``settings`` (a JSON-serialisable dict of whatever decides the output).
    """
    out = Path(output_dir)
    check_not_nested(out, inputs)
    if out.exists() and not out.is_dir():
        raise DataToolError(f"{out}: expected an output folder, found a file")
    resuming = False
    if out.is_dir() and any(out.iterdir()):
        marker = read_marker(out)
        if marker_matches(out, tool, settings):
            resuming = True
        elif not overwrite:
            hint = ""
            if marker is not None and marker.get("tool") == tool:
                hint = " (it holds an interrupted run with different settings)"
            raise DataToolError(f"{out}: the output folder exists and is not empty{hint}; choose a new folder or "
                                f"pass --overwrite to write into it")
    out.mkdir(parents=True, exist_ok=True)
    if resuming:
        _remove_stale_temp_files(out)
    write_marker(out, tool, settings)
    return resuming


def _remove_stale_temp_files(out: Path) -> None:
    # A run killed outright (not Ctrl-C, which cleans up) can leave the hidden ".<name>.<pid>.tmp" files of
    # copy_file / save_image / atomic_write behind; in our own interrupted output folder they are debris.
    for dirpath, _dirnames, filenames in os.walk(out):
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                Path(dirpath, name).unlink(missing_ok=True)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def marker_matches(output_dir: PathLike, tool: str, settings: Optional[dict]) -> bool:
    """Whether ``output_dir`` holds an interrupted run of ``tool`` with these ``settings``."""
    marker = read_marker(output_dir)
    return marker is not None and marker.get("tool") == tool and marker.get("settings") == _jsonable(settings)


def read_marker(output_dir: PathLike) -> Optional[dict]:
    """The interrupted-run marker of ``output_dir``, or None."""
    try:
        return json.loads((Path(output_dir) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_marker(output_dir: PathLike, tool: str, settings: Optional[dict]) -> None:
    from ws_dan.io import write_json

    write_json(Path(output_dir) / MARKER_NAME, {"tool": tool, "settings": _jsonable(settings)})


def finish_output_dir(output_dir: PathLike) -> None:
    """Remove the interrupted-run marker: the job in ``output_dir`` is complete."""
    (Path(output_dir) / MARKER_NAME).unlink(missing_ok=True)


def remove_tree(path: Path) -> None:
    """Delete a folder the tool itself wrote earlier (used by ``--overwrite``); symlinks are not followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


# ---------------------------------------------------------------------------------------------------------------
# Files


def _tmp_name(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{os.getpid()}.tmp")


def copy_file(src: PathLike, dst: PathLike, link: bool = False) -> str:
    """Copy (or hard-link) ``src`` to ``dst`` atomically; returns ``"copied"`` or ``"linked"``.

    A hard link needs both paths on one filesystem; where it fails (another device, a filesystem without
    links) the file is copied instead and ``"copied"`` says so. ``dst``'s folder is created.
    """
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dst)
    how = "copied"
    try:
        if link:
            try:
                os.link(src, tmp)
                how = "linked"
            except OSError:
                shutil.copy2(src, tmp)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return how


def move_file(src: PathLike, dst: PathLike) -> None:
    """Move ``src`` to ``dst`` without ever leaving a partial file under either name.

    On one filesystem this is a rename (atomic, keeps the inode and times). Across filesystems the file is
    copied to a temporary name beside ``dst``, renamed into place, and only then removed from ``src``.
    Refuses to replace an existing ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst}: already exists; refusing to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    copy_file(src, dst)
    os.unlink(src)


def save_image(image: Any, dst: PathLike, format: str, **params: Any) -> None:
    """Save a PIL image to ``dst`` atomically in ``format`` (``"JPEG"``, ``"PNG"``...)."""
    with atomic_write(dst, "wb") as f:
        image.save(f, format=format, **params)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def unique_path(path: Path, taken: set, tag: str = "") -> Path:
    """``path``, or a sibling name not in ``taken`` (``stem__tag.ext``, then ``stem__tag_2.ext`` ...).

    ``taken`` holds lower-cased path strings, so two names differing only in case (one file on macOS and
    Windows filesystems) do not collide either. The chosen path is added to ``taken``.
    """
    base = f"{path.stem}__{tag}" if tag else path.stem
    names = itertools.chain([path.name], [f"{base}{path.suffix}"] if tag else [],
                            (f"{base}_{k}{path.suffix}" for k in itertools.count(2)))
    for name in names:
        candidate = path.with_name(name)
        if str(candidate).lower() not in taken:
            break
    taken.add(str(candidate).lower())
    return candidate


# ---------------------------------------------------------------------------------------------------------------
# Dataset layout


@dataclass(frozen=True)
class DatasetImage:
    """An image found under a dataset folder: its split and class come from the folders above it."""

    path: Path
    root: Path
    split: str  # "" when the folder has no split level
    label: str  # "" for an image with no class folder
    rel: Path  # path relative to ``root``


def split_folders(root: PathLike) -> list[Path]:
    """The split sub-folders of ``root`` (train/, test/ ...) when all its sub-folders are splits, else []."""
    root = Path(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs and all(p.name.lower() in SPLIT_NAMES for p in subdirs):
        return subdirs
    return []


def scan_dataset(root: PathLike, splits: Optional[bool] = None) -> tuple[list[DatasetImage], list]:
    """Find the images under ``root`` and read split and class from the folder structure.

    Layouts: ``root/<split>/<class>/...`` when every sub-folder of ``root`` is a split name (or ``splits`` is
    True), else ``root/<class>/...``; images deeper inside a class folder belong to that class, images directly in
    ``root`` (or a split folder) have no class. Returns ``(images, skipped)``; ``skipped`` lists the
    :class:`~ws_dan.images.SkippedFile` entries of files that are not images.
    """
    from ws_dan.images import find_images

    root = Path(root)
    if not root.is_dir():
        what = "nothing (the path does not exist)" if not root.exists() else "a file"
        raise DataToolError(f"{root}: expected a folder of images, found {what}")
    paths, skipped = find_images(root)
    use_splits = bool(split_folders(root)) if splits is None else splits
    items = []
    for p in paths:
        rel = p.relative_to(root)
        parts = rel.parts
        if use_splits:
            split = parts[0] if len(parts) > 1 else ""
            label = parts[1] if len(parts) > 2 else ""
        else:
            split = ""
            label = parts[0] if len(parts) > 1 else ""
        items.append(DatasetImage(p, root, split, label, rel))
    return items, skipped


# ---------------------------------------------------------------------------------------------------------------
# Progress and parallel work


def track(iterable: Iterable[T], total: Optional[int] = None, desc: str = "", progress: Progress = False) -> Iterator[T]:
    """Iterate, reporting progress with tqdm (``progress=True``), a callback, or not at all."""
    if progress is True:
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)
        return
    if callable(progress):
        n = total if total is not None else 0
        for i, item in enumerate(iterable, 1):
            yield item
            progress(i, n, desc)
        return
    yield from iterable


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: Optional[int] = None, progress: Progress = False,
                 desc: str = "", chunksize: Optional[int] = None) -> Iterator[R]:
    """``map(fn, items)`` in order, over ``workers`` processes (all cores when None; 0 or 1: this process).

    ``fn`` must be a module-level function (or a functools.partial of one) so it can be sent to the workers.
    On Ctrl-C the pending work is cancelled rather than waited for.
    """
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) <= 1:
        yield from track(map(fn, items), total=len(items), desc=desc, progress=progress)
        return
    if chunksize is None:
        chunksize = max(1, min(64, len(items) // (workers * 8)))
    ex = ProcessPoolExecutor(max_workers=min(workers, len(items)))
    try:
        yield from track(ex.map(fn, items, chunksize=chunksize), total=len(items), desc=desc, progress=progress)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------------
# Reports


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table (right-aligned numbers) for the summary a script prints at the end."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def skipped_rows(skipped: Iterable[Any], root: Optional[PathLike] = None) -> list[dict]:
    """CSV rows ``path, reason`` for skipped files (paths relative to ``root`` when given)."""
    rows = []
    for s in skipped:
        path = Path(s.path)
        if root is not None:
            try:
                path = path.relative_to(root)
            except ValueError:
                pass
        rows.append({"path": str(path), "reason": s.reason})
    return rows


def add_job_flags(parser, workers_help: str = "processes (default: all CPU cores)",
                  strict_help: str = "stop at the first unreadable image") -> None:
    """Add the flags every data tool shares: -j/--workers, --overwrite, --strict, --progress, -v/--verbose."""
    import argparse

    parser.add_argument("-j", "--workers", type=int, default=None, help=workers_help)
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--strict", action="store_true", help=strict_help)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
