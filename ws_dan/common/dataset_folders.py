"""The folder layout of a dataset: splits, class folders, and the images in them (the one dataset scanner).

Layouts: ``root/<split>/<class>/...`` when every sub-folder of ``root`` is a split name (:data:`SPLIT_NAMES`),
else ``root/<class>/...``. Images deeper inside a class folder belong to that class; images directly in ``root``
(or a split folder) have no class. Files are found by :func:`ws_dan.common.images.find_images` (content sniffed, hidden
files ignored, symlinked files listed, symlinked folders not entered, so a link loop cannot hang a scan).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ws_dan.common.io import InputError, PathLike

#: Folder names recognised as splits of a dataset (``root/<split>/<class>/...``).
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")


@dataclass(frozen=True)
class DatasetImage:
    """An image found under a dataset folder: its split and class come from the folders above it."""

    path: Path
    root: Path
    split: str  # "" when the folder has no split level
    label: str  # "" for an image with no class folder
    rel: Path  # path relative to ``root``


def sub_folders(root: PathLike) -> list[Path]:
    """The visible sub-folders of ``root``, sorted (a symlinked folder counts: the user put it there)."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def class_folders(root: PathLike) -> list[str]:
    """The class names of ``root/<class>/...``: its visible sub-folders' names, sorted."""
    return [p.name for p in sub_folders(root)]


def split_folders(root: PathLike) -> list[Path]:
    """The split sub-folders of ``root`` (train/, test/ ...) when all its sub-folders are splits, else []."""
    subdirs = sub_folders(root)
    if subdirs and all(p.name.lower() in SPLIT_NAMES for p in subdirs):
        return subdirs
    return []


def scan_dataset(root: PathLike, splits: Optional[bool] = None) -> tuple[list[DatasetImage], list]:
    """Find the images under ``root`` and read split and class from the folder structure (see the module doc).

    ``splits``: force (True) or forbid (False) the split level; None decides from the sub-folder names. Returns
    ``(images, skipped)``; ``skipped`` lists the :class:`~ws_dan.common.images.SkippedFile` entries of files that are
    not images. Raises :class:`~ws_dan.common.io.InputError` when ``root`` is not a folder.
    """
    from ws_dan.common.images import find_images

    root = Path(root)
    if not root.is_dir():
        what = "nothing (the path does not exist)" if not root.exists() else "a file"
        raise InputError(f"{root}: expected a folder of images, found {what}")
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
