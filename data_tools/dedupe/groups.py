"""Duplicate groups and the report of the duplicate finder: which copy each group keeps, leaks, label conflicts.

:func:`find_duplicates` compares every image of one tree; :func:`find_leaks` only the query images (e.g. test/)
with the reference images (e.g. train/). Each group's ``members[0]`` is the copy to keep (:func:`keeper_order`).
:func:`duplicates_contact_sheet` draws the groups for a person to check.

Both hash at the working size only (``hash_images(..., digests=False)``: a JPEG is draft-decoded) and take the
full-decode pixel digest only of the images ``search.exact_candidates`` names (same size, nearly the same hashes;
its docstring says why that finds every exact pair). Exact pairs are always grouped, whatever the threshold, as
they were when identical pixels meant identical hashes, and an exact copy's distance reads 0.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from data_tools.dedupe.hashing import HashedImages, add_digests, hash_images
from data_tools.dedupe.neighbours import (
    DEFAULT_THRESHOLD,
    check_threshold,
    connected_groups,
    exact_candidates,
    exact_pairs,
    find_pairs,
    pair_distances,
)
from data_tools.parallel import Progress
from ws_dan.common.dataset_folders import DatasetImage, scan_dataset
from ws_dan.common.images import SkippedFile
from ws_dan.common.io import InputError
from ws_dan.common.outputs import check_not_nested

LOG = logging.getLogger(__name__)


@dataclass
class DuplicateGroup:
    """Images that duplicate each other; ``members[0]`` is the one to keep."""

    id: int
    members: list[int]  # indexes into DuplicateReport.images
    distances: list[int]  # to members[0]
    kinds: list[str]  # "keep" for members[0], then "exact" or "near"
    labels: list[str]

    @property
    def label_conflict(self) -> bool:
        """Members filed under different class folders: at least one label is wrong (or the classes overlap)."""
        return len({x for x in self.labels if x}) > 1

    @property
    def kind(self) -> str:
        return "exact" if all(k == "exact" for k in self.kinds[1:]) else "near"


@dataclass
class DuplicateReport:
    """Result of :func:`find_duplicates` / :func:`find_leaks`."""

    images: list[DatasetImage]  # every readable image compared (reference images first in leak mode)
    sides: list[str]  # per image: "" (one tree), "reference" or "query"
    hashes: np.ndarray  # (N, 2, 4)
    digests: list[str]
    sizes: np.ndarray  # (N, 2)
    groups: list[DuplicateGroup]
    threshold: int
    skipped: list[SkippedFile]
    hash_seconds: float
    search_seconds: float
    pairs: int
    mode: str = "within"  # or "leak"
    exact_only: bool = False

    def duplicates(self) -> list[int]:
        """Indexes of the images a clean-up would remove: every member but the keeper (in leak mode: the query
        images of each group)."""
        out = []
        for g in self.groups:
            for m in g.members[1:] if self.mode == "within" else g.members:
                if self.sides[m] != "reference":
                    out.append(m)
        return sorted(out)

    def rows(self) -> list[dict]:
        """``duplicates.csv`` rows: one per image in a group, the group's keeper first."""
        out = []
        for g in self.groups:
            for m, d, k, label in zip(g.members, g.distances, g.kinds, g.labels):
                img = self.images[m]
                out.append({
                    "group": g.id, "role": "keep" if k == "keep" else "duplicate",
                    "kind": g.kind if k == "keep" else k, "distance": d, "path": str(img.path),
                    "side": self.sides[m], "split": img.split, "label": label,
                    "width": int(self.sizes[m, 0]), "height": int(self.sizes[m, 1]),
                    "label_conflict": int(g.label_conflict),
                })
        return out

    def conflict_rows(self) -> list[dict]:
        """``label_conflicts.csv`` rows: the groups whose members carry different class labels."""
        return [r for r in self.rows() if r["label_conflict"]]

    def summary(self) -> dict:
        dup = self.duplicates()
        exact = sum(1 for g in self.groups for k in g.kinds[1:] if k == "exact")
        kinds = {m: k for g in self.groups for m, k in zip(g.members, g.kinds)}
        n_hashed = len(self.images) + len(self.skipped)
        out = {
            "mode": self.mode,
            "images": len(self.images),
            "skipped": len(self.skipped),
            "groups": len(self.groups),
            "images_in_groups": sum(len(g.members) for g in self.groups),
            "duplicates": len(dup),
            "exact_pairs_to_keeper": exact,
            "near_pairs_to_keeper": sum(len(g.members) - 1 for g in self.groups) - exact,
            "label_conflict_groups": sum(g.label_conflict for g in self.groups),
            "threshold": self.threshold,
            "exact_only": self.exact_only,
            "pairs_within_threshold": self.pairs,
            "hash_seconds": round(self.hash_seconds, 3),
            "images_per_second": round(n_hashed / self.hash_seconds, 2) if self.hash_seconds > 0 else None,
            "search_seconds": round(self.search_seconds, 4),
        }
        if self.mode == "within":
            out["cross_split_groups"] = sum(len({self.images[m].split for m in g.members}) > 1 for g in self.groups)
        else:
            out["leaked_query_images"] = len(dup)
            out["leaked_exact"] = sum(1 for m in dup if kinds.get(m) == "exact")
        return out


_SPLIT_RANK = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def keeper_order(members: list[int], images: list[DatasetImage], sizes: np.ndarray, sides: list[str]) -> list[int]:
    """``members`` sorted so that the copy to keep comes first.

    A reference image when there is one; then the most pixels (most information); then a real file before a
    symlink (a link to the kept file would otherwise be kept while the file itself is moved away); then the
    training split's copy (removing the test copy is what fixes a leak); then the biggest file (less compression
    for the same pixels); then the first path.
    """
    return sorted(members, key=lambda m: (sides[m] != "reference", -int(sizes[m, 0]) * int(sizes[m, 1]),
                                          os.path.islink(images[m].path),
                                          _SPLIT_RANK.get(images[m].split.lower(), 1), -_file_size(images[m].path),
                                          m))


def _same_pixels(digests: list, a: int, b: int) -> bool:
    return digests[a] is not None and digests[a] == digests[b]


def build_report(images: list[DatasetImage], sides: list[str], hashed: HashedImages, pairs_i: np.ndarray,
                  pairs_j: np.ndarray, threshold: int, search_seconds: float, mode: str,
                  skipped: list[SkippedFile], exact_only: bool) -> DuplicateReport:
    groups = []
    for members in connected_groups(len(images), pairs_i, pairs_j):
        members = keeper_order(members, images, hashed.sizes, sides)
        keeper = members[0]
        dists = pair_distances(hashed.hashes[[keeper] * len(members)], hashed.hashes[members]).tolist()
        exact = [_same_pixels(hashed.digests, m, keeper) for m in members]
        kinds = ["keep"] + ["exact" if e else "near" for e in exact[1:]]
        # Identical pixels are distance 0 by definition (a draft-decoded JPEG's hashes may sit a bit or two off).
        dists = [0 if e else int(d) for d, e in zip(dists, exact)]
        groups.append(DuplicateGroup(0, members, dists, kinds, [images[m].label for m in members]))
    groups.sort(key=lambda g: str(images[g.members[0]].path))
    for k, g in enumerate(groups, 1):
        g.id = k
    return DuplicateReport(images, sides, hashed.hashes, hashed.digests, hashed.sizes, groups, threshold,
                           skipped, hashed.seconds, search_seconds, len(pairs_i), mode, exact_only)


def _union(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs of two ``(i, j)`` pair lists, sorted."""
    pairs = np.unique(np.concatenate([np.stack(a, axis=1), np.stack(b, axis=1)]).reshape(-1, 2).astype(np.int64),
                      axis=0)
    return pairs[:, 0], pairs[:, 1]


def find_duplicates(data_dir, threshold: int = DEFAULT_THRESHOLD, workers: Optional[int] = None,
                    progress: Progress = False, strict: bool = False, exact_only: bool = False,
                    images: Optional[list[DatasetImage]] = None) -> DuplicateReport:
    """Exact and near-duplicate groups among the images under ``data_dir`` (all splits and classes together).

    ``images`` may give the list to compare instead of scanning ``data_dir``. Groups spanning splits are
    train/test leaks; groups spanning classes are label conflicts (both counted in the summary).
    """
    check_threshold(threshold)
    skipped: list[SkippedFile] = []
    if images is None:
        images, skipped = scan_dataset(data_dir)
    by_path = {img.path: img for img in images}
    hashed = hash_images([img.path for img in images], workers=workers, progress=progress, strict=strict,
                         digests=False)
    kept = [by_path[p] for p in hashed.paths]
    start = time.perf_counter()
    ci, cj = exact_candidates(hashed.hashes, hashed.sizes, workers=workers)
    near = (np.zeros(0, np.int64),) * 2 if exact_only else find_pairs(hashed.hashes, threshold, workers=workers)[:2]
    search = time.perf_counter() - start
    add_digests(hashed, np.concatenate([ci, cj]), workers=workers, progress=progress)
    LOG.debug("%d exact candidates, %d digested", len(ci), sum(d is not None for d in hashed.digests))
    ii, jj = _union(near, exact_pairs(hashed.digests))
    LOG.debug("%d pairs within distance %d among %d images", len(ii), threshold, len(kept))
    return build_report(kept, [""] * len(kept), hashed, ii, jj, threshold, search, "within",
                         skipped + hashed.skipped, exact_only)


def find_leaks(reference_dir, query_dir, threshold: int = DEFAULT_THRESHOLD, workers: Optional[int] = None,
               progress: Progress = False, strict: bool = False, exact_only: bool = False,
               reference_images: Optional[list[DatasetImage]] = None,
               query_images: Optional[list[DatasetImage]] = None) -> DuplicateReport:
    """Every query image (e.g. test/) that duplicates a reference image (e.g. train/): train/test leakage.

    Only reference-query pairs are compared. Each group holds one or more reference images (the keeper is one
    of them) and the query images that duplicate them.
    """
    check_threshold(threshold)
    if reference_images is None and query_images is None:
        try:
            check_not_nested(query_dir, [reference_dir])
        except InputError:
            raise InputError(f"{query_dir}: the query folder and the reference folder {reference_dir} overlap; "
                                f"expected two separate trees (e.g. train/ and test/)") from None
    skipped: list[SkippedFile] = []
    if reference_images is None:
        reference_images, s = scan_dataset(reference_dir)
        skipped += s
    if query_images is None:
        query_images, s = scan_dataset(query_dir)
        skipped += s
    all_images = list(reference_images) + list(query_images)
    by_path = {img.path: img for img in all_images}
    sides_by_path = {img.path: "reference" for img in reference_images}
    sides_by_path.update({img.path: "query" for img in query_images})
    hashed = hash_images([img.path for img in all_images], workers=workers, progress=progress, strict=strict,
                         digests=False)
    kept = [by_path[p] for p in hashed.paths]
    sides = [sides_by_path[p] for p in hashed.paths]
    is_ref = np.array([s == "reference" for s in sides], dtype=bool)
    ref_idx, query_idx = np.flatnonzero(is_ref), np.flatnonzero(~is_ref)
    start = time.perf_counter()
    qh, rh = hashed.hashes[query_idx], hashed.hashes[ref_idx]
    cq, cr = exact_candidates(qh, hashed.sizes[query_idx], other=rh, other_sizes=hashed.sizes[ref_idx],
                              workers=workers)
    if exact_only:
        near = (np.zeros(0, np.int64),) * 2
    else:
        qi, rj, _ = find_pairs(qh, threshold, other=rh, workers=workers)
        near = (ref_idx[rj], query_idx[qi])
    search = time.perf_counter() - start
    add_digests(hashed, np.concatenate([query_idx[cq], ref_idx[cr]]), workers=workers, progress=progress)
    ii, jj = _union(near, exact_pairs(hashed.digests, left=is_ref))
    return build_report(kept, sides, hashed, ii, jj, threshold, search, "leak", skipped + hashed.skipped,
                         exact_only)


def duplicates_contact_sheet(report: DuplicateReport, path, max_groups: int = 20, max_per_group: int = 8,
                             thumb: int = 112) -> Optional[Path]:
    """A PNG with one row per group (the first ``max_groups``): keeper first, captions with distance and kind,
    file name and class; the group id on the left, red for a label conflict (``ws_dan.common.contact_sheet``).

    Returns the path, or None when there is no group. Images that fail to open show as grey tiles.
    """
    from ws_dan.common.contact_sheet import contact_sheet

    groups = report.groups[:max_groups]
    rows = []
    for g in groups:
        tiles = []
        for m, d, k in list(zip(g.members, g.distances, g.kinds))[:max_per_group]:
            img = report.images[m]
            tiles.append((img.path, ["keep" if k == "keep" else f"{k}, d={d}", img.path.name, img.label]))
        rows.append(tiles)
    return contact_sheet(rows, path, thumb=thumb, row_labels=[(str(g.id), g.label_conflict) for g in groups],
                         caption_lines=3, chars=18)


#: The name scripts and notebooks used before the renderer was shared.
contact_sheet = duplicates_contact_sheet
