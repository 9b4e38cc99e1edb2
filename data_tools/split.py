"""Combine split folders (train/, test/, ...) and write a new stratified train/test split.

The reference project pooled Stanford Cars' official train and test sets (16,185 images) and re-split them 75/25
per class. :func:`split_dataset` does that for any number of source folders:

* per class, ``n * test_ratio`` images (rounded half up) go to the test split (at least one to each side when a
  class has two or more images); classes with fewer than ``min_per_class`` images go to train whole and are reported;
* the assignment depends only on the seed, the class name and the sorted list of files, so the same inputs
  give the same split on any machine, whatever the order the filesystem lists them in;
* with ``group_duplicates`` every group of near-duplicates (data_tools.dedupe) is one unit that goes to one
  side, so the test split holds no copy of a training image;
* files are copied (or hard-linked) into a new folder, the sources are only read; two sources holding the
  same relative path get distinct names (``name__<source folder>.jpg``), nothing is overwritten or lost; a
  symlinked image is copied (or hard-linked) as the real file it points to, never as a link;
* a class folder with no image is named in a warning (and in the report), not dropped silently;
* ``split_manifest.csv`` lists every file: source path, split, class, path in the output, SHA-256.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional

from data_tools.parallel import Progress, parallel_map, track
from ws_dan.common.dataset_folders import DatasetImage, scan_dataset, split_folders, sub_folders
from ws_dan.common.images import DEFAULT_MAX_PIXELS, SkippedFile, UnreadableImageError, check_image
from ws_dan.common.io import InputError, sha256_file
from ws_dan.common.outputs import (
    copy_file,
    finish_output_dir,
    output_path,
    prepare_output_dir,
    remove_tree,
    unique_path,
)

LOG = logging.getLogger(__name__)

MANIFEST_FIELDS = ("source", "split", "class", "path", "sha256", "group")


@dataclass
class SplitResult:
    """What :func:`split_dataset` did; ``summary`` is also written to ``split_report.json``."""

    output_dir: Path
    manifest: list[dict]
    per_class: list[dict]
    skipped: list[SkippedFile]
    summary: dict = field(default_factory=dict)


def collect_sources(sources: Sequence, empty: Optional[list] = None) -> tuple[list[DatasetImage], list[SkippedFile]]:
    """Images of every source folder with their class. A source is a split folder (``src/<class>/...``) or a
    dataset folder whose sub-folders are all splits (``src/train/<class>/...``), which counts as its splits.

    Images that are not inside a class folder are skipped with the reason. Class folders holding no image are
    appended to ``empty`` (when given).
    """
    if not sources:
        raise InputError("no --source folder given; expected one or more folders of class folders")
    items: list[DatasetImage] = []
    skipped: list[SkippedFile] = []
    for src in sources:
        src = Path(src)
        if not src.is_dir():
            what = "nothing (the path does not exist)" if not src.exists() else "a file"
            raise InputError(f"{src}: expected a folder of class folders (<class>/<images>), found {what}")
        for folder in split_folders(src) or [src]:
            found, skip = scan_dataset(folder, splits=False)
            skipped += skip
            if empty is not None:
                labels = {img.label for img in found}
                empty += [p for p in sub_folders(folder) if p.name not in labels]
            for img in found:
                if not img.label:
                    skipped.append(SkippedFile(img.path, "not inside a class folder"))
                else:
                    items.append(img)
    if not items:
        raise InputError(f"{', '.join(map(str, sources))}: no images in class folders found "
                            f"(expected <source>/<class>/<image>)")
    return items, skipped


def _inspect(path: Path, check: bool, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, Optional[str]]:
    # Worker: the file's SHA-256 and, when asked, why it does not decode (None when it does).
    try:
        digest = sha256_file(path)
    except OSError as e:
        return "", f"cannot read file: {e.strerror or e}"
    return digest, (check_image(path, max_pixels) if check else None)


def assign_splits(labels: Sequence[str], units: Sequence[Sequence[int]], test_ratio: float, seed: int,
                  min_per_class: int = 2) -> tuple[list[str], list[dict]]:
    """Choose ``"train"`` or ``"test"`` for each image, class by class.

    ``labels[k]`` is image k's class; ``units`` partition the images into groups that must stay together
    (single images, or duplicate groups: a unit counts for the class of its first member). Returns the
    assignment per image and one row per class (total, train, test, note).
    """
    if not 0.0 < test_ratio < 1.0:
        raise InputError(f"--test-ratio {test_ratio}: expected a fraction between 0 and 1, e.g. 0.25")
    by_class: dict[str, list[list[int]]] = {}
    for unit in units:
        unit = sorted(unit)
        by_class.setdefault(labels[unit[0]], []).append(unit)
    split = ["train"] * len(labels)
    rows = []
    for label in sorted(by_class):
        class_units = sorted(by_class[label])
        n = sum(len(u) for u in class_units)
        note = ""
        target = 0
        if n < min_per_class:
            note = f"too few images ({n} < {min_per_class}): all in train"
        else:
            # Half rounds up (Python's round() would send 4.5 to 4 and 5.5 to 6).
            target = min(max(math.floor(n * test_ratio + 0.5), 1), n - 1)
            # A string seed is hashed with SHA-512 by random.Random: stable across runs and Python versions,
            # and each class's shuffle is independent of the other classes.
            random.Random(f"{seed}:{label}").shuffle(class_units)
            in_test = 0
            for unit in class_units:
                if in_test + len(unit) <= target:
                    for k in unit:
                        split[k] = "test"
                    in_test += len(unit)
            if in_test == 0 and len(class_units) > 1:
                # Every unit is larger than the quota (big duplicate groups): the smallest one goes to test.
                smallest = min(class_units, key=len)
                for k in smallest:
                    split[k] = "test"
            if in_test != target:
                note = "duplicate groups kept together: the test share differs from the ratio"
        test = sum(split[k] == "test" for u in class_units for k in u)
        rows.append({"class": label, "total": n, "train": n - test, "test": test,
                     "test_fraction": round(test / n, 4) if n else 0.0, "target_test": target, "note": note})
    return split, rows


def split_dataset(sources: Sequence, output_dir, test_ratio: float = 0.25, seed: int = 0, link: bool = False,
                  group_duplicates: bool = False, threshold: Optional[int] = None, min_per_class: int = 2,
                  check: bool = True, train_name: str = "train", test_name: str = "test",
                  workers: Optional[int] = None, progress: Progress = False, strict: bool = False,
                  overwrite: bool = False) -> SplitResult:
    """Write a stratified split of the images in ``sources`` to ``output_dir``/{train,test}/<class>/.

    ``check`` decodes every image and leaves out (and lists) the unreadable ones; ``strict`` raises
    :class:`~ws_dan.common.images.UnreadableImageError` at the first instead. ``group_duplicates`` keeps
    near-duplicates (distance ``threshold``, data_tools.dedupe's default when None) on one side. An existing,
    non-empty ``output_dir`` is refused unless ``overwrite`` (which replaces its train/ and test/ folders) or it
    holds an interrupted run with the same settings, which is then completed.
    """
    from data_tools import dedupe

    threshold = dedupe.DEFAULT_THRESHOLD if threshold is None else threshold
    dedupe.check_threshold(threshold)
    if train_name == test_name:
        raise InputError(f"the train and test folder names must differ (both {train_name!r})")
    out = Path(output_dir)
    settings = {"sources": [str(Path(s).resolve()) for s in sources], "test_ratio": test_ratio, "seed": seed,
                "group_duplicates": group_duplicates, "threshold": threshold if group_duplicates else None,
                "min_per_class": min_per_class, "check": check, "names": [train_name, test_name]}
    empty: list[Path] = []
    items, skipped = collect_sources(sources, empty)  # before touching the output: bad sources fail first
    for folder in empty:
        LOG.warning("%s: class folder with no images%s; it has no place in the split", folder,
                    " (a symlinked folder is not followed)" if folder.is_symlink() else "")
    resuming = _open_output(out, sources, overwrite, settings, (train_name, test_name))
    keep = _read_all(items, skipped, check and not group_duplicates, strict, workers, progress)
    units = _Units.of(keep, skipped, group_duplicates, threshold, strict, workers, progress)
    keep = units.keep  # without the images hashing found unreadable
    labels = [img.label for img, _ in keep]
    assignment, per_class = assign_splits(labels, units.units, test_ratio, seed, min_per_class)
    order, dests, renamed = _destinations(keep, assignment, sources, train_name, test_name)
    how = _copy_all(keep, order, dests, out, link, resuming, progress)
    manifest = [{"source": str(keep[k][0].path), "split": dests[k].parts[0], "class": keep[k][0].label,
                 "path": dests[k].as_posix(), "sha256": keep[k][1], "group": units.group_of.get(k, "")}
                for k in order]
    n_test = sum(a == "test" for a in assignment)
    summary = {
        "output_dir": str(out), "sources": [str(s) for s in sources], "seed": seed, "test_ratio": test_ratio,
        "images": len(keep), "train": len(keep) - n_test, "test": n_test, "classes": len(per_class),
        "classes_too_few": [r["class"] for r in per_class if r["note"].startswith("too few")],
        "empty_class_folders": [str(p) for p in empty],
        "renamed_on_collision": renamed, "skipped": len(skipped), "group_duplicates": group_duplicates,
        "duplicate_groups": len([u for u in units.units if len(u) > 1]),
        "label_conflict_groups": units.label_conflicts, "threshold": threshold if group_duplicates else None, **how,
    }
    _write_reports(out, manifest, per_class, skipped, summary)
    return SplitResult(out, manifest, per_class, skipped, summary)


def _open_output(out: Path, sources: Sequence, overwrite: bool, settings: dict, sides: Sequence[str]) -> bool:
    """The output folder (with ``overwrite``, its train and test folders removed); whether an interrupted split
    with the same settings is being completed."""
    resuming = prepare_output_dir(out, sources, overwrite=overwrite, tool="split_dataset", settings=settings)
    if resuming:
        LOG.info("%s: completing an interrupted split with the same settings", out)
    elif overwrite:
        for name in sides:
            remove_tree(out / name)
    return resuming


def _read_all(items: list[DatasetImage], skipped: list, check: bool, strict: bool, workers: Optional[int],
              progress: Progress) -> list[tuple[DatasetImage, str]]:
    """Read every file once: SHA-256 for the manifest, a full decode (``check``) to leave out unreadable images
    (added to ``skipped``). Returns (image, digest) for the others."""
    infos = list(parallel_map(partial(_inspect, check=check), [i.path for i in items], workers=workers,
                              progress=progress, desc="reading"))
    keep = []
    for img, (digest, reason) in zip(items, infos):
        if reason:
            if strict:
                raise UnreadableImageError(img.path, reason)
            skipped.append(SkippedFile(img.path, reason))
        else:
            keep.append((img, digest))
    return keep


@dataclass
class _Units:
    """Units that must stay on one side of the split: single images, or duplicate groups."""

    keep: list[tuple[DatasetImage, str]]  # the images split (hashing may leave out more unreadable ones)
    units: list[list[int]]  # positions in ``keep``
    group_of: dict[int, int]  # position -> duplicate group id (1, 2, ...), for images in a group
    label_conflicts: int  # groups whose images carry more than one label

    @classmethod
    def of(cls, keep: list[tuple[DatasetImage, str]], skipped: list, group_duplicates: bool, threshold: int,
           strict: bool, workers: Optional[int], progress: Progress) -> _Units:
        from data_tools import dedupe

        group_of: dict[int, int] = {}
        units: list[list[int]] = []
        label_conflicts = 0
        if group_duplicates and keep:
            hashed = dedupe.hash_images([img.path for img, _ in keep], workers=workers, progress=progress,
                                        strict=strict)
            readable = set(hashed.paths)
            skipped += hashed.skipped
            keep = [(img, d) for img, d in keep if img.path in readable]
            index = {p: k for k, p in enumerate(hashed.paths)}
            order = [index[img.path] for img, _ in keep]  # keep's order -> hashed's order
            ii, jj, _ = dedupe.find_pairs(hashed.hashes[order], threshold, workers=workers)
            for gid, members in enumerate(dedupe.connected_groups(len(keep), ii, jj), 1):
                units.append(members)
                for m in members:
                    group_of[m] = gid
                if len({keep[m][0].label for m in members}) > 1:
                    label_conflicts += 1
        units += [[k] for k in range(len(keep)) if k not in group_of]
        return cls(keep, units, group_of, label_conflicts)


def _destinations(keep: list[tuple[DatasetImage, str]], assignment: list[str], sources: Sequence, train_name: str,
                  test_name: str) -> tuple[list[int], dict[int, Path], int]:
    """Destination names: the relative path inside the class folder, made unique across sources (the earlier
    source keeps the name). Returns the copy order, each image's destination and how many were renamed."""
    order = sorted(range(len(keep)), key=lambda k: (_source_rank(keep[k][0], sources), str(keep[k][0].path)))
    taken: set = set()
    dests: dict[int, Path] = {}
    renamed = 0
    for k in order:
        img = keep[k][0]
        side = train_name if assignment[k] == "train" else test_name
        wanted = Path(side) / img.rel
        dest = unique_path(wanted, taken, tag=img.root.name)
        renamed += dest != wanted
        dests[k] = dest
    return order, dests, renamed


def _copy_all(keep: list[tuple[DatasetImage, str]], order: list[int], dests: dict[int, Path], out: Path, link: bool,
              resuming: bool, progress: Progress) -> dict[str, int]:
    """Copy (or link). Each file appears complete or not at all; a rerun after Ctrl-C skips what is already
    there. Returns the counts copied / linked / already_there."""
    how = {"copied": 0, "linked": 0, "already_there": 0}
    for k in track(order, total=len(order), desc="copying", progress=progress):
        src, dst = keep[k][0].path, output_path(out, dests[k])
        if resuming and dst.is_file() and dst.stat().st_size == src.stat().st_size:
            how["already_there"] += 1
            continue
        how[copy_file(src, dst, link=link)] += 1
    return how


def _write_reports(out: Path, manifest: list[dict], per_class: list[dict], skipped: list, summary: dict) -> None:
    from ws_dan.common.io import write_csv, write_json

    write_csv(out / "split_manifest.csv", manifest, MANIFEST_FIELDS)
    write_csv(out / "split_classes.csv", per_class,
              ["class", "total", "train", "test", "test_fraction", "target_test", "note"])
    write_csv(out / "skipped.csv", [{"path": str(s.path), "reason": s.reason} for s in skipped], ["path", "reason"])
    write_json(out / "split_report.json", summary)
    finish_output_dir(out)


def _source_rank(img: DatasetImage, sources: Sequence) -> int:
    resolved = img.root.resolve()
    for k, s in enumerate(sources):
        s = Path(s).resolve()
        if resolved == s or s in resolved.parents:
            return k
    return len(sources)
