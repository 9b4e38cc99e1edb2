"""Exact and near-duplicate images, within one folder tree or between two (train/test leakage).

How two images are compared
---------------------------
* **Exact** duplicates have identical pixels after decoding (:func:`pixel_digest`: SHA-256 of the upright RGB
  array and its size), so a JPEG re-saved as PNG, or the same picture with different metadata, is exact.
* **Near** duplicates are found with four 64-bit perceptual hashes from the ``imagehash`` library, computed on the
  grayscale image: pHash (low DCT frequencies), dHash (horizontal gradient signs), vertical dHash and wHash
  (Haar wavelet). Each is computed twice, on the whole image and on its centre with 5% cut from every side. The
  distance of two images (0..256) is the smallest, over the four pairings whole/whole, whole/centre,
  centre/whole and centre/centre, of the four hashes' summed Hamming distances.

  Why: one pHash (imagededup's method) misses slightly cropped copies, because a 5% border crop rescales the
  whole picture by 10% and moves every low frequency. Comparing one image's centre with the other's whole
  undoes exactly that rescaling. Summing four different hashes lets their small, mostly independent
  disagreements (a rotation, JPEG noise, brightness) average out, while unrelated photos stay far apart in all
  four. Grayscale hashes make colour changes (a grayscale copy) irrelevant.
* The all-against-all search (:func:`find_pairs`) is numpy XOR + popcount over the packed ``uint64`` hashes, a
  block of rows at a time on threads (numpy releases the GIL). Pairs are first screened with pHash + dHash
  only: their distance is a lower bound of the full one, so the screen loses nothing and the full distance is
  computed only for the few pairs that pass. Pairs are grouped by connected components.

The library never prints; scripts/dedupe.py is the command-line front end.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from data_tools.common import (
    DataToolError, DatasetImage, Progress, check_not_nested, copy_file, default_workers, move_file, parallel_map, scan_dataset, sha256_file, track,
    unique_path,
)
from ws_dan.images import DEFAULT_MAX_PIXELS, SkippedFile, UnreadableImageError, open_image

LOG = logging.getLogger("ws_dan.data_tools.dedupe")

#: The hashes, in the order of the last axis of a hash array.
HASH_NAMES = ("phash", "dhash", "dhash_vertical", "whash")
#: The two views of each image hashed, in the order of the middle axis of a hash array.
VIEW_NAMES = ("whole", "centre")
#: Fraction cut from every side for the centre view: matches copies with a border crop of about this much.
CROP_FRACTION = 0.05
#: (view of image a, view of image b) pairings tried; the distance is the smallest.
PAIRINGS = ((0, 0), (0, 1), (1, 0), (1, 1))
#: Largest possible distance: four 64-bit hashes.
MAX_DISTANCE = 64 * len(HASH_NAMES)
#: Default near-duplicate threshold on that distance (see the README for how it was chosen and what it gives).
DEFAULT_THRESHOLD = 36
#: Thresholds above this match unrelated photos (two random images differ in about 128 bits) and would make
#: the candidate list explode; refused.
MAX_THRESHOLD = 96
#: Images are box-reduced to about this many pixels on the longer side before hashing: the hashes use 32x32 or
#: smaller versions, and reducing first makes hashing a large photo several times faster.
HASH_WORKING_SIZE = 256


# ---------------------------------------------------------------------------------------------------------------
# Hashing


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


# ---------------------------------------------------------------------------------------------------------------
# Search


if hasattr(np, "bitwise_count"):  # numpy >= 2.0: a hardware popcount
    def popcount(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Number of set bits of each element (uint8)."""
        return np.bitwise_count(x, out=out)
else:  # pragma: no cover - numpy 1.x: a byte lookup table
    _POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def popcount(x: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Number of set bits of each element (uint8)."""
        counts = _POP8[np.ascontiguousarray(x).view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)
        if out is None:
            return counts
        out[...] = counts
        return out


def pair_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances between ``a[k]`` and ``b[k]`` for hash arrays of shape ``(K, 2, 4)``: int array ``(K,)``."""
    a = np.asarray(a, dtype=np.uint64)
    b = np.asarray(b, dtype=np.uint64)
    best = None
    for va, vb in PAIRINGS:
        d = popcount(a[:, va, :] ^ b[:, vb, :]).sum(axis=1, dtype=np.int64)
        best = d if best is None else np.minimum(best, d)
    return best if best is not None else np.zeros(0, np.int64)


def distance(a: np.ndarray, b: np.ndarray) -> int:
    """Distance between two images' hash arrays (shape ``(2, 4)`` each)."""
    return int(pair_distances(np.asarray(a)[None], np.asarray(b)[None])[0])


def find_pairs(hashes: np.ndarray, threshold: int = DEFAULT_THRESHOLD, other: Optional[np.ndarray] = None,
               workers: Optional[int] = None, block: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs within ``threshold``, compared all-against-all without a Python loop over pairs.

    ``hashes`` (and ``other``) have shape ``(N, 2, 4)``. Without ``other``: pairs ``i < j`` of ``hashes``.
    With ``other``: pairs ``(i, j)`` with ``i`` in ``hashes`` and ``j`` in ``other``. Returns ``(i, j, d)``
    int64 arrays sorted by ``(i, j)``. ``workers`` threads share the blocks of ``block`` rows.
    """
    check_threshold(threshold)
    a = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1, 2, 4)
    b = a if other is None else np.ascontiguousarray(other, dtype=np.uint64).reshape(-1, 2, 4)
    within = other is None
    n, m = len(a), len(b)
    empty = np.zeros(0, np.int64)
    if n == 0 or m == 0:
        return empty, empty, empty
    # Columns per (view, hash) as contiguous vectors: the broadcasted XOR then streams through memory.
    cols_a = {(v, k): np.ascontiguousarray(a[:, v, k]) for v in range(2) for k in range(2)}
    cols_b = {(v, k): np.ascontiguousarray(b[:, v, k]) for v in range(2) for k in range(2)}
    local = threading.local()
    limit = np.uint8(min(threshold, 255))

    def screen(start: int) -> tuple[np.ndarray, np.ndarray]:
        stop = min(n, start + block)
        c0 = start if within else 0  # within one set only the upper triangle is needed
        rows, width = stop - start, m - c0
        if getattr(local, "shape", None) != (block, m):
            local.shape = (block, m)
            local.x = np.empty((block, m), np.uint64)
            local.d = np.empty((block, m), np.uint8)
            local.e = np.empty((block, m), np.uint8)
            local.f = np.empty((block, m), np.uint8)
        x, d = local.x[:rows, :width], local.d[:rows, :width]
        e, f = local.e[:rows, :width], local.f[:rows, :width]
        for p, (va, vb) in enumerate(PAIRINGS):
            # pHash + dHash distance of this pairing: a lower bound of its full distance. Preallocated buffers
            # and small row blocks keep the temporaries in cache; this loop is the whole cost of the search.
            target = d if p == 0 else e
            np.bitwise_xor(cols_a[va, 0][start:stop, None], cols_b[vb, 0][None, c0:], out=x)
            popcount(x, out=target)
            np.bitwise_xor(cols_a[va, 1][start:stop, None], cols_b[vb, 1][None, c0:], out=x)
            popcount(x, out=f)
            target += f
            if p:
                np.minimum(d, e, out=d)
        ii, jj = np.nonzero(d <= limit)
        ii = ii + start
        jj = jj + c0
        if within:
            keep = jj > ii
            ii, jj = ii[keep], jj[keep]
        return ii.astype(np.int64), jj.astype(np.int64)

    starts = range(0, n, block)
    workers = default_workers() if workers is None else max(1, workers)
    if workers == 1 or len(starts) == 1:
        parts = [screen(s) for s in starts]
    else:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            parts = list(ex.map(screen, starts))
    ii = np.concatenate([p[0] for p in parts]) if parts else empty
    jj = np.concatenate([p[1] for p in parts]) if parts else empty
    dd = pair_distances(a[ii], b[jj]) if len(ii) else empty
    keep = dd <= threshold
    return ii[keep], jj[keep], dd[keep]


def check_threshold(threshold: int) -> None:
    """Raise :class:`~data_tools.common.DataToolError` for a threshold outside 0..MAX_THRESHOLD."""
    if not 0 <= int(threshold) <= MAX_THRESHOLD:
        raise DataToolError(f"--threshold {threshold}: expected 0 to {MAX_THRESHOLD} (summed Hamming distance "
                            f"of four 64-bit hashes; the default is {DEFAULT_THRESHOLD})")


def connected_groups(n: int, i: np.ndarray, j: np.ndarray) -> list[list[int]]:
    """Groups (of size 2 or more) of the graph on ``n`` nodes with edges ``(i[k], j[k])``, sorted members."""
    if n == 0 or len(i) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return [sorted(g.tolist()) for g in np.split(order, bounds) if len(g) > 1]


# ---------------------------------------------------------------------------------------------------------------
# Groups and the report


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


def _keeper_order(members: list[int], images: list[DatasetImage], sizes: np.ndarray, sides: list[str]) -> list[int]:
    # The copy to keep: a reference image when there is one; then the most pixels (most information); then the
    # training split's copy (removing the test copy is what fixes a leak); then the biggest file (less
    # compression for the same pixels); then the first path.
    return sorted(members, key=lambda m: (sides[m] != "reference", -int(sizes[m, 0]) * int(sizes[m, 1]),
                                          _SPLIT_RANK.get(images[m].split.lower(), 1), -_file_size(images[m].path),
                                          m))


def _build_report(images: list[DatasetImage], sides: list[str], hashed: HashedImages, pairs_i: np.ndarray,
                  pairs_j: np.ndarray, threshold: int, search_seconds: float, mode: str,
                  skipped: list[SkippedFile], exact_only: bool) -> DuplicateReport:
    groups = []
    for members in connected_groups(len(images), pairs_i, pairs_j):
        members = _keeper_order(members, images, hashed.sizes, sides)
        keeper = members[0]
        dists = pair_distances(hashed.hashes[[keeper] * len(members)], hashed.hashes[members]).tolist()
        kinds = ["keep"] + ["exact" if hashed.digests[m] == hashed.digests[keeper] else "near" for m in members[1:]]
        groups.append(DuplicateGroup(0, members, [int(d) for d in dists], kinds, [images[m].label for m in members]))
    groups.sort(key=lambda g: str(images[g.members[0]].path))
    for k, g in enumerate(groups, 1):
        g.id = k
    return DuplicateReport(images, sides, hashed.hashes, hashed.digests, hashed.sizes, groups, threshold,
                           skipped, hashed.seconds, search_seconds, len(pairs_i), mode, exact_only)


def _exact_pairs(digests: Sequence[str], left: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of equal digests (each image linked to the first with its digest); ``left`` restricts the pairs
    to those joining a True and a False image (leak mode)."""
    first: dict[str, list[int]] = {}
    for k, dg in enumerate(digests):
        first.setdefault(dg, []).append(k)
    ii, jj = [], []
    for idx in first.values():
        if len(idx) < 2:
            continue
        if left is None:
            ii += [idx[0]] * (len(idx) - 1)
            jj += idx[1:]
        else:
            refs = [k for k in idx if left[k]]
            for q in (k for k in idx if not left[k]):
                ii += refs
                jj += [q] * len(refs)
    return np.array(ii, dtype=np.int64), np.array(jj, dtype=np.int64)


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
    hashed = hash_images([img.path for img in images], workers=workers, progress=progress, strict=strict)
    kept = [by_path[p] for p in hashed.paths]
    start = time.perf_counter()
    if exact_only:
        ii, jj = _exact_pairs(hashed.digests)
    else:
        ii, jj, _ = find_pairs(hashed.hashes, threshold, workers=workers)
    search = time.perf_counter() - start
    LOG.debug("%d pairs within distance %d among %d images", len(ii), threshold, len(kept))
    return _build_report(kept, [""] * len(kept), hashed, ii, jj, threshold, search, "within",
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
        except DataToolError:
            raise DataToolError(f"{query_dir}: the query folder and the reference folder {reference_dir} overlap; "
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
    hashed = hash_images([img.path for img in all_images], workers=workers, progress=progress, strict=strict)
    kept = [by_path[p] for p in hashed.paths]
    sides = [sides_by_path[p] for p in hashed.paths]
    is_ref = np.array([s == "reference" for s in sides], dtype=bool)
    ref_idx, query_idx = np.flatnonzero(is_ref), np.flatnonzero(~is_ref)
    start = time.perf_counter()
    if exact_only:
        ii, jj = _exact_pairs(hashed.digests, left=is_ref)
    else:
        qi, rj, _ = find_pairs(hashed.hashes[query_idx], threshold, other=hashed.hashes[ref_idx], workers=workers)
        ii, jj = ref_idx[rj], query_idx[qi]
    search = time.perf_counter() - start
    return _build_report(kept, sides, hashed, ii, jj, threshold, search, "leak", skipped + hashed.skipped,
                         exact_only)


# ---------------------------------------------------------------------------------------------------------------
# Actions: contact sheet, copy the unique images, quarantine (+ undo)


def contact_sheet(report: DuplicateReport, path, max_groups: int = 20, max_per_group: int = 8,
                  thumb: int = 112) -> Optional[Path]:
    """A PNG with one row per group (the first ``max_groups``): keeper first, captions with distance and kind.

    Returns the path, or None when there is no group. Images that fail to open show as grey tiles.
    """
    from PIL import ImageDraw

    from data_tools.common import save_image

    groups = report.groups[:max_groups]
    if not groups:
        return None
    label_h, pad = 40, 6
    cols = min(max_per_group, max(len(g.members) for g in groups))
    sheet = Image.new("RGB", (pad + cols * (thumb + pad) + 40, pad + len(groups) * (thumb + label_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, g in enumerate(groups):
        y = pad + r * (thumb + label_h + pad)
        draw.text((4, y + thumb // 2), f"{g.id}", fill=(200, 0, 0) if g.label_conflict else (0, 0, 0))
        for c, (m, d, k) in enumerate(list(zip(g.members, g.distances, g.kinds))[:max_per_group]):
            x = 40 + c * (thumb + pad)
            try:
                im = open_image(report.images[m].path)
                im.thumbnail((thumb, thumb))
            except (UnreadableImageError, OSError):
                im = Image.new("RGB", (thumb, thumb), (160, 160, 160))
            sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
            caption = "keep" if k == "keep" else f"{k}, d={d}"
            draw.text((x, y + thumb + 2), caption, fill=(0, 0, 0))
            for line, text in enumerate((report.images[m].path.name, report.images[m].label), 1):
                draw.text((x, y + thumb + 2 + 12 * line), _shorten(text), fill=(90, 90, 90))
    save_image(sheet, path, "PNG")
    return Path(path)


def _shorten(text: str, n: int = 18) -> str:
    return text if len(text) <= n else text[: n // 2 - 1] + "~" + text[-(n // 2):]


def _output_rel(img: DatasetImage, side: str) -> Path:
    # In leak mode both trees may hold the same relative path: keep them apart by side.
    return Path(side) / img.rel if side else img.rel


def copy_unique(report: DuplicateReport, output_dir, link: bool = False, progress: Progress = False,
                resume: bool = False) -> dict:
    """Copy (or hard-link) the images a clean-up keeps into ``output_dir``, same relative paths.

    One tree: every image outside a group, and each group's keeper. Leak mode: the query images that duplicate
    no reference image. Unreadable files are not copied. ``resume`` skips files already present (they were
    written atomically, so they are complete).
    """
    drop = set(report.duplicates())
    wanted = [k for k in range(len(report.images))
              if k not in drop and (report.mode == "within" or report.sides[k] == "query")]
    counts = {"copied": 0, "linked": 0, "already_there": 0}
    for k in track(wanted, total=len(wanted), desc="copying", progress=progress):
        img = report.images[k]
        dst = Path(output_dir) / img.rel
        if resume and dst.exists():
            counts["already_there"] += 1
            continue
        counts[copy_file(img.path, dst, link=link)] += 1
    return counts


MANIFEST_FIELDS = ("original", "quarantined", "sha256", "bytes", "group")


def quarantine(report: DuplicateReport, quarantine_dir, manifest_path, progress: Progress = False) -> dict:
    """Move the duplicates (see :meth:`DuplicateReport.duplicates`) into ``quarantine_dir``.

    The undo manifest (absolute original and quarantined paths, SHA-256, size) is written *before* anything
    moves, and rows of an earlier run are kept, so :func:`undo_quarantine` can restore everything even after a
    crash half-way. Never replaces an existing file.
    """
    from ws_dan.io import read_csv_rows, write_csv

    quarantine_dir = Path(quarantine_dir).resolve()
    manifest_path = Path(manifest_path)
    old_rows = read_csv_rows(manifest_path) if manifest_path.is_file() else []
    # Rows of an interrupted run whose file never moved are planned again below; drop the stale ones.
    old_rows = [r for r in old_rows if Path(r["quarantined"]).exists() or not Path(r["original"]).exists()]
    taken = {r["quarantined"].lower() for r in old_rows}
    group_of = {m: g.id for g in report.groups for m in g.members}
    plan = []
    for k in report.duplicates():
        img = report.images[k]
        src = img.path.resolve()
        dst = unique_path(quarantine_dir / _output_rel(img, report.sides[k] if report.mode == "leak" else ""), taken)
        while dst.exists():  # left from an earlier run that the manifest does not know about
            dst = unique_path(dst, taken, tag="q")
        plan.append({"original": str(src), "quarantined": str(dst), "sha256": sha256_file(src),
                     "bytes": src.stat().st_size, "group": group_of[k]})
    write_csv(manifest_path, old_rows + plan, MANIFEST_FIELDS)
    moved = 0
    for row in track(plan, total=len(plan), desc="quarantine", progress=progress):
        move_file(row["original"], row["quarantined"])
        moved += 1
    return {"moved": moved, "manifest": str(manifest_path), "quarantine_dir": str(quarantine_dir)}


def undo_quarantine(manifest_path, progress: Progress = False) -> dict:
    """Move every quarantined file of ``manifest_path`` back to where it was, checking its SHA-256.

    Safe to run twice and after an interrupted quarantine: a file already back in place is counted, not moved;
    a quarantined file whose content changed, or whose original place is taken by another file, is left where
    it is and reported.
    """
    from ws_dan.io import read_csv_rows

    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise DataToolError(f"{manifest_path}: expected a quarantine manifest CSV written by dedupe.py")
    rows = read_csv_rows(manifest_path)
    if rows and not set(MANIFEST_FIELDS) <= set(rows[0]):
        raise DataToolError(f"{manifest_path}: not a quarantine manifest (expected columns {', '.join(MANIFEST_FIELDS)})")
    counts = {"restored": 0, "already_in_place": 0, "missing": 0, "changed": 0, "blocked": 0}
    problems = []
    for row in track(list(reversed(rows)), total=len(rows), desc="undo", progress=progress):
        original, moved = Path(row["original"]), Path(row["quarantined"])
        if original.exists():
            if original.is_file() and sha256_file(original) == row["sha256"]:
                counts["already_in_place"] += 1
            else:
                counts["blocked"] += 1
                problems.append(f"{original}: another file is in the way; {moved} left in quarantine")
            continue
        if not moved.exists():
            counts["missing"] += 1
            problems.append(f"{moved}: missing from the quarantine folder (and not back at {original})")
            continue
        if sha256_file(moved) != row["sha256"]:
            counts["changed"] += 1
            problems.append(f"{moved}: content changed since it was quarantined; left where it is")
            continue
        move_file(moved, original)
        counts["restored"] += 1
    for p in problems:
        LOG.warning(p)
    return {**counts, "problems": problems}


# ---------------------------------------------------------------------------------------------------------------
# The whole job, as scripts/dedupe.py runs it

ACTIONS = ("report", "copy-unique", "quarantine")
DUPLICATE_FIELDS = ("group", "role", "kind", "distance", "path", "side", "split", "label", "width", "height",
                    "label_conflict")


def run_dedupe(output_dir, data_dir=None, reference_dir=None, query_dir=None, threshold: int = DEFAULT_THRESHOLD,
               action: str = "report", link: bool = False, exact_only: bool = False, contact_groups: int = 20,
               workers: Optional[int] = None, progress: Progress = False, strict: bool = False,
               overwrite: bool = False) -> tuple[DuplicateReport, dict]:
    """Find duplicates in ``data_dir`` (or query images duplicating reference images) and write the outputs.

    ``output_dir`` receives ``duplicates.csv`` (a row per image in a group, keeper first), ``label_conflicts.csv``,
    ``skipped.csv``, ``contact_sheet.png`` (first ``contact_groups`` groups) and ``dedupe_report.json``. Action
    ``copy-unique`` adds ``unique/`` (the images to keep); ``quarantine`` moves the duplicates into
    ``quarantine/`` and writes ``quarantine_manifest.csv`` for :func:`undo_quarantine`.
    Returns the report and the summary.
    """
    from ws_dan.io import write_csv, write_json

    from data_tools.common import finish_output_dir, prepare_output_dir, skipped_rows

    if action not in ACTIONS:
        raise DataToolError(f"--action {action}: expected one of {', '.join(ACTIONS)}")
    check_threshold(threshold)
    if data_dir is not None and (reference_dir is not None or query_dir is not None):
        raise DataToolError("give either --data-dir, or --reference and --query, not both")
    if data_dir is None and (reference_dir is None or query_dir is None):
        raise DataToolError("expected --data-dir DIR, or both --reference DIR and --query DIR")
    inputs = [data_dir] if data_dir is not None else [reference_dir, query_dir]
    for d in inputs:
        if not Path(d).is_dir():
            raise DataToolError(f"{d}: expected a folder of images, found "
                                f"{'nothing (the path does not exist)' if not Path(d).exists() else 'a file'}")
    out = Path(output_dir)
    settings = {"inputs": [str(Path(d).resolve()) for d in inputs], "threshold": threshold, "action": action,
                "exact_only": exact_only}
    resuming = prepare_output_dir(out, inputs, overwrite=overwrite, tool="dedupe", settings=settings)
    if data_dir is not None:
        report = find_duplicates(data_dir, threshold=threshold, workers=workers, progress=progress, strict=strict,
                                 exact_only=exact_only)
    else:
        report = find_leaks(reference_dir, query_dir, threshold=threshold, workers=workers, progress=progress,
                            strict=strict, exact_only=exact_only)
    if not report.images:
        raise DataToolError(f"{', '.join(map(str, inputs))}: no readable images found")
    write_csv(out / "duplicates.csv", report.rows(), DUPLICATE_FIELDS)
    write_csv(out / "label_conflicts.csv", report.conflict_rows(), DUPLICATE_FIELDS)
    write_csv(out / "skipped.csv", skipped_rows(report.skipped), ["path", "reason"])
    sheet = contact_sheet(report, out / "contact_sheet.png", max_groups=contact_groups) if contact_groups > 0 else None
    summary = report.summary()
    summary.update(action=action, output_dir=str(out), contact_sheet=str(sheet) if sheet else None)
    if action == "copy-unique":
        summary["unique_dir"] = str(out / "unique")
        summary["copy"] = copy_unique(report, out / "unique", link=link, progress=progress, resume=resuming)
    elif action == "quarantine":
        summary["quarantine"] = quarantine(report, out / "quarantine", out / "quarantine_manifest.csv", progress)
    write_json(out / "dedupe_report.json", summary)
    finish_output_dir(out)
    return report, summary
