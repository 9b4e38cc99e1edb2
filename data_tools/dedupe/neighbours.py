"""The all-against-all search of the duplicate finder, and the grouping of the pairs it finds.

The distance of two images (0..256) is the smallest, over the four pairings whole/whole, whole/centre,
centre/whole and centre/centre of their views (``data_tools.dedupe.hashing``), of the four hashes' summed Hamming
distances. :func:`find_pairs` is numpy XOR + popcount over the packed ``uint64`` hashes, a block of rows at a time
on threads (numpy releases the GIL). Pairs are first screened with pHash + dHash only: their distance is a lower
bound of the full one, so the screen loses nothing and the full distance is computed only for the few pairs that
pass. Pairs are grouped by connected components (:func:`connected_groups`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

from data_tools.dedupe.hashing import DRAFT_DEVIATION, HASH_NAMES
from ws_dan.common.io import InputError
from ws_dan.common.runtime import default_workers

#: (view of image a, view of image b) pairings tried; the distance is the smallest.
PAIRINGS = ((0, 0), (0, 1), (1, 0), (1, 1))
#: Largest possible distance: four 64-bit hashes.
MAX_DISTANCE = 64 * len(HASH_NAMES)
#: Default near-duplicate threshold on that distance (see the README for how it was chosen and what it gives).
DEFAULT_THRESHOLD = 36
#: Same-size pairs within this distance get the full-decode pixel digest (:func:`exact_candidates`): at least twice
#: the largest draft-vs-full deviation measured (``hashing.DRAFT_DEVIATION``), with room to spare.
EXACT_CANDIDATE_DISTANCE = max(24, 2 * DRAFT_DEVIATION)
#: Thresholds above this match unrelated photos (two random images differ in about 128 bits) and would make
#: the candidate list explode; refused.
MAX_THRESHOLD = 96


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
    """Raise :class:`~ws_dan.common.io.InputError` for a threshold outside 0..MAX_THRESHOLD."""
    if not 0 <= int(threshold) <= MAX_THRESHOLD:
        raise InputError(f"--threshold {threshold}: expected 0 to {MAX_THRESHOLD} (summed Hamming distance "
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


def exact_pairs(digests: Sequence[Optional[str]], left: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of equal digests (each image linked to the first with its digest); ``left`` restricts the pairs
    to those joining a True and a False image (leak mode). A None digest (not computed) matches nothing."""
    first: dict[str, list[int]] = {}
    for k, dg in enumerate(digests):
        if dg is not None:
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


def exact_candidates(hashes: np.ndarray, sizes: np.ndarray, other: Optional[np.ndarray] = None,
                     other_sizes: Optional[np.ndarray] = None, bound: int = EXACT_CANDIDATE_DISTANCE,
                     workers: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """The pairs that can be pixel-identical: equal full sizes and distance <= ``bound``; ``(i, j)`` as
    :func:`find_pairs` gives them (with ``other``: ``i`` in ``hashes``, ``j`` in ``other``).

    Only their images need the full-decode pixel digest. Why nothing is lost (proof sketch): let ``F(x)`` be the
    hashes of image ``x``'s full decode and ``h(x)`` those actually computed (a JPEG draft-decoded at reduced scale,
    anything else decoded in full, so ``h = F`` there). If ``a`` and ``b`` are pixel-identical, their full
    decodes are the same array, so (1) their sizes are equal (the digest covers the size) and (2) ``F(a) = F(b)``.
    The distance is at most the whole/whole pairing's summed Hamming distance, a metric, so by the triangle
    inequality ``distance(h(a), h(b)) <= |h(a) - F(a)| + |F(b) - h(b)| <= 2 * DRAFT_DEVIATION <= bound``, where
    ``DRAFT_DEVIATION`` bounds how far a draft decode moves the four whole-image hashes (measured on 1,121 real
    photos: 6 bits at most; the scaled decode differs from the full one only by rounding and a slightly different
    low-pass, which the hashes' 64x64-or-coarser resampling averages away). Two byte-identical JPEGs, or two
    non-JPEG files, are at distance 0 outright. So every pixel-identical pair is a candidate, and digesting the
    candidates alone finds exactly the exact pairs the old "digest everything" found.
    """
    check_threshold(bound)
    i, j, _ = find_pairs(hashes, bound, other=other, workers=workers)
    sizes = np.asarray(sizes).reshape(-1, 2)
    right = sizes if other is None else np.asarray(other_sizes).reshape(-1, 2)
    same = np.all(sizes[i] == right[j], axis=1) if len(i) else np.zeros(0, bool)
    return i[same], j[same]
