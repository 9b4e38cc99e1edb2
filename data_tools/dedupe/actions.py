"""What a clean-up does with a duplicate report: copy the images to keep, or quarantine the extra copies (+ undo).

Both act on the paths the report lists, never on what a symlink points to: ``copy-unique`` copies (or with
``link`` hard-links) the real file behind each kept path (``ws_dan.common.outputs.copy_file``), and the quarantine moves
the duplicate's path itself, link or file, through the shared manifest (``data_tools.manifest``), which refuses
to move a file that a kept image links to and records the folders that undo may act in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from data_tools.dedupe.groups import DuplicateReport
from data_tools.manifest import MOVE_FIELDS, quarantine_files, undo_moves
from data_tools.parallel import Progress, track
from ws_dan.common.dataset_folders import DatasetImage
from ws_dan.common.outputs import copy_file, output_path

#: Columns of dedupe's quarantine_manifest.csv.
MANIFEST_FIELDS = MOVE_FIELDS


def _output_rel(img: DatasetImage, side: str) -> Path:
    # In leak mode both trees may hold the same relative path: keep them apart by side.
    return Path(side) / img.rel if side else img.rel


def copy_unique(report: DuplicateReport, output_dir, link: bool = False, progress: Progress = False,
                resume: bool = False) -> dict:
    """Copy (or hard-link) the images a clean-up keeps into ``output_dir``, same relative paths.

    One tree: every image outside a group, and each group's keeper. Leak mode: the query images that duplicate
    no reference image. Unreadable files are not copied. ``resume`` skips files already present (they were
    written atomically, so they are complete). Returns counts: ``copied``, ``linked`` (hard links to the real
    files), ``already_there``.
    """
    drop = set(report.duplicates())
    wanted = [k for k in range(len(report.images))
              if k not in drop and (report.mode == "within" or report.sides[k] == "query")]
    counts = {"copied": 0, "linked": 0, "already_there": 0}
    for k in track(wanted, total=len(wanted), desc="copying", progress=progress):
        img = report.images[k]
        dst = output_path(output_dir, img.rel)
        if resume and dst.is_file():
            counts["already_there"] += 1
            continue
        counts[copy_file(img.path, dst, link=link)] += 1
    return counts


def quarantine(report: DuplicateReport, quarantine_dir, manifest_path, progress: Progress = False,
               data_roots: Sequence = ()) -> dict:
    """Move the duplicates (see :meth:`DuplicateReport.duplicates`) into ``quarantine_dir``.

    The undo manifest and the folders it may act in (``data_roots``: the scanned folders; by default each
    image's own root) are written *before* anything moves (``data_tools.manifest.quarantine_files``). Never
    replaces a file; never moves a keeper, a file a kept image links to, or anything outside ``data_roots``.
    """
    group_of = {m: g.id for g in report.groups for m in g.members}
    dups = report.duplicates()
    moving = set(dups)
    moves = [(report.images[k].path,
              _output_rel(report.images[k], report.sides[k] if report.mode == "leak" else ""),
              {"group": group_of[k]}) for k in dups]
    keep = [img.path for k, img in enumerate(report.images) if k not in moving]
    roots = list(data_roots) or sorted({str(img.root) for img in report.images})
    return quarantine_files(moves, roots, quarantine_dir, manifest_path, MANIFEST_FIELDS, keep=keep, tool="dedupe",
                            progress=progress)


def undo_quarantine(manifest_path, progress: Progress = False) -> dict:
    """Move every quarantined file of ``manifest_path`` back (``data_tools.manifest.undo_moves``: only inside the
    recorded folders, content checked, nothing replaced)."""
    return undo_moves(manifest_path, progress=progress)
