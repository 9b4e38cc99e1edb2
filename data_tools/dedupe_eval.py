"""Measure the duplicate finder: altered copies of real photos, recall / precision, search speed.

Used by scripts/benchmark_dedupe.py and the tests. The alterations are those the project's target names: half
size, JPEG quality 40, a 5% border crop (5% off every side), 20% brighter, a 3 degree rotation, grayscale, and
the same pixels saved as PNG (an exact duplicate).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageEnhance

from data_tools.dedupe import HashedImages, connected_groups, find_pairs, popcount
from data_tools.parallel import Progress, track
from ws_dan.images import open_image
from ws_dan.outputs import save_image


def _half(im: Image.Image) -> Image.Image:
    return im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.LANCZOS)


def _crop5(im: Image.Image) -> Image.Image:
    dx, dy = round(im.width * 0.05), round(im.height * 0.05)
    return im.crop((dx, dy, im.width - dx, im.height - dy))


#: name -> (function, file format, save options)
ALTERATIONS: dict[str, tuple[Callable[[Image.Image], Image.Image], str, dict]] = {
    "half_size": (_half, "JPEG", {"quality": 90}),
    "jpeg_q40": (lambda im: im, "JPEG", {"quality": 40}),
    "crop_5pct": (_crop5, "JPEG", {"quality": 90}),
    "brighter_20pct": (lambda im: ImageEnhance.Brightness(im).enhance(1.2), "JPEG", {"quality": 90}),
    "rotate_3deg": (lambda im: im.rotate(3, resample=Image.BICUBIC), "JPEG", {"quality": 90}),
    "grayscale": (lambda im: im.convert("L"), "JPEG", {"quality": 90}),
    "png_same_pixels": (lambda im: im, "PNG", {}),
}


@dataclass(frozen=True)
class EvalImage:
    """One file of the evaluation set: ``group`` is the source photo it shows, ``kind`` "original" or an
    alteration name."""

    path: Path
    group: int
    kind: str


def make_altered_copies(sources: Sequence[Path], output_dir, alterations: Sequence[str] = tuple(ALTERATIONS),
                        progress: Progress = False) -> list[EvalImage]:
    """Write each source photo (copied as decoded RGB, PNG) and its altered copies under ``output_dir``.

    Files are ``NNNNN_<kind>.<ext>`` in one flat folder; the original is saved losslessly so that the
    ``png_same_pixels`` copy is an exact duplicate of it.
    """
    out = Path(output_dir)
    items = []
    for g, src in enumerate(track(list(sources), total=len(sources), desc="altering", progress=progress)):
        im = open_image(src)
        orig = out / f"{g:05d}_original.png"
        if not orig.exists():
            save_image(im, orig, "PNG")
        items.append(EvalImage(orig, g, "original"))
        for name in alterations:
            fn, fmt, opts = ALTERATIONS[name]
            dst = out / f"{g:05d}_{name}.{'png' if fmt == 'PNG' else 'jpg'}"
            if not dst.exists():
                save_image(fn(im), dst, fmt, **opts)
            items.append(EvalImage(dst, g, name))
    return items


def evaluate(hashed: HashedImages, items: Sequence[EvalImage], threshold: int,
             same_photo: Sequence[tuple[int, int]] = (), workers: Optional[int] = None) -> dict:
    """Recall and precision of the near-duplicate search at ``threshold`` on an altered-copies set.

    ``same_photo`` lists pairs of groups known to show the same photo already in the source set (they are
    merged before scoring). Pair metrics: a predicted pair is right when both images show the same photo;
    recall over all such pairs. Copy recall: the fraction of altered copies found with their original, overall
    and per alteration. Group metrics: after grouping, the fraction of copies in their original's group and the
    fraction of same-group pairs that are right.
    """
    by_path = {it.path: it for it in items}
    group = np.array([by_path[p].group for p in hashed.paths])
    kind = np.array([by_path[p].kind for p in hashed.paths])
    group = _merge_groups(group, same_photo)
    start = time.perf_counter()
    ii, jj, _ = find_pairs(hashed.hashes, threshold, workers=workers)
    search = time.perf_counter() - start
    return _score(group, kind, ii, jj, search) | {"threshold": threshold}


def evaluate_single_phash(hashed: HashedImages, items: Sequence[EvalImage], threshold: int = 10,
                          same_photo: Sequence[tuple[int, int]] = ()) -> dict:
    """The baseline: one 64-bit pHash of the whole image (imagededup's method), Hamming distance <= threshold."""
    by_path = {it.path: it for it in items}
    group = _merge_groups(np.array([by_path[p].group for p in hashed.paths]), same_photo)
    kind = np.array([by_path[p].kind for p in hashed.paths])
    ph = hashed.hashes[:, 0, 0]
    ii, jj = [], []
    for s in range(0, len(ph), 256):  # blocks of rows; each block is one vectorised comparison
        d = popcount(ph[s:s + 256, None] ^ ph[None, :])
        a, b = np.nonzero(d <= threshold)
        a = a + s
        keep = b > a
        ii.append(a[keep])
        jj.append(b[keep])
    ii = np.concatenate(ii) if ii else np.zeros(0, np.int64)
    jj = np.concatenate(jj) if jj else np.zeros(0, np.int64)
    return _score(group, kind, ii, jj, 0.0) | {"threshold": threshold}


def _merge_groups(group: np.ndarray, same_photo: Sequence[tuple[int, int]]) -> np.ndarray:
    group = group.copy()
    for a, b in same_photo:
        group[group == b] = a
    return group


def _score(group: np.ndarray, kind: np.ndarray, ii: np.ndarray, jj: np.ndarray, search: float) -> dict:
    n = len(group)
    right = group[ii] == group[jj]
    _, sizes = np.unique(group, return_counts=True)
    true_pairs = int((sizes * (sizes - 1) // 2).sum())
    predicted = len(ii)
    # copy -> original pairs
    original_of = {int(g): k for k, (g, kd) in enumerate(zip(group, kind)) if kd == "original"}
    found = set()
    for a, b in zip(ii.tolist(), jj.tolist()):
        found.add((a, b))
        found.add((b, a))
    per_kind: dict[str, list[bool]] = {}
    groups = connected_groups(n, ii, jj)
    label = np.arange(n)
    for k, members in enumerate(groups):
        label[members] = n + k
    in_group: list[bool] = []
    for k in range(n):
        if kind[k] == "original" or int(group[k]) not in original_of:
            continue
        o = original_of[int(group[k])]
        per_kind.setdefault(str(kind[k]), []).append((k, o) in found)
        in_group.append(label[k] == label[o])
    copies = [x for v in per_kind.values() for x in v]
    same_pred = 0
    same_right = 0
    for members in groups:
        m = np.array(members)
        same_pred += len(m) * (len(m) - 1) // 2
        _, c = np.unique(group[m], return_counts=True)
        same_right += int((c * (c - 1) // 2).sum())
    wrong = [(int(a), int(b)) for a, b in zip(ii[~right], jj[~right])]
    return {
        "images": n,
        "pairs_predicted": predicted,
        "pairs_true": true_pairs,
        "pair_precision": float(right.sum() / predicted) if predicted else 1.0,
        "pair_recall": float(right.sum() / true_pairs) if true_pairs else 1.0,
        "copy_recall": float(np.mean(copies)) if copies else 1.0,
        "copy_recall_by_kind": {k: float(np.mean(v)) for k, v in sorted(per_kind.items())},
        "copies_in_original_group": float(np.mean(in_group)) if in_group else 1.0,
        "group_pair_precision": float(same_right / same_pred) if same_pred else 1.0,
        "wrong_pairs": len(wrong),
        "wrong_group_pairs": sorted({tuple(sorted((int(group[a]), int(group[b])))) for a, b in wrong}),
        "search_seconds": round(search, 4),
    }


def synthetic_hashes(n: int, seed: int = 0, copies: int = 1000, flip_bits: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random hash arrays ``(n, 2, 4)`` of which the last ``copies`` are near copies (``flip_bits``
    random bit flips over the four hashes) of the first ``copies``. Returns ``(hashes, planted)`` where
    ``planted[k]`` is the index copied by ``n - copies + k``."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, np.iinfo(np.uint64).max, size=(n, 2, 4), dtype=np.uint64, endpoint=True)
    copies = min(copies, n // 2)
    planted = np.arange(copies)
    for k in range(copies):
        c = h[k].copy()
        for bit in rng.choice(256, size=flip_bits, replace=False):
            c[:, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
        h[n - copies + k] = c
    return h, planted


def time_search(n: int = 20000, threshold: int = 36, workers: Optional[int] = None, seed: int = 0) -> dict:
    """Seconds to compare ``n`` synthetic images' hashes all-against-all, and whether the planted copies
    were all found."""
    h, planted = synthetic_hashes(n, seed)
    start = time.perf_counter()
    ii, jj, _ = find_pairs(h, threshold, workers=workers)
    seconds = time.perf_counter() - start
    found = set(zip(ii.tolist(), jj.tolist()))
    n_copies = len(planted)
    hit = sum((int(p), n - n_copies + k) in found for k, p in enumerate(planted))
    return {"images": n, "pairs_compared": n * (n - 1) // 2, "seconds": round(seconds, 3),
            "planted_copies": n_copies, "planted_found": hit, "pairs_found": len(ii)}
