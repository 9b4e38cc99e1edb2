"""Measure the duplicate finder: altered copies of real photos, recall / precision, search and end-to-end speed.

Used by scripts/benchmark_dedupe.py and the tests. The alterations are those the project's target names: half
size, JPEG quality 40, a 5% border crop (5% off every side), 20% brighter, a 3 degree rotation, grayscale, and
the same pixels saved as PNG (an exact duplicate).

For the side-by-side comparison three ways of hashing are measured in one run: the finder as it is
(JPEGs draft-decoded, pixel digests only for exact candidates: :func:`data_tools.dedupe.find_duplicates`), a
full-decode baseline (:func:`legacy_hash_images`: every file decoded in full, every pixel digest, the ``imagehash``
library's functions on a larger working image), and imagededup's PHash where that package is installed
(:func:`imagededup_phash`; an optional extra, never a dependency).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageEnhance

from data_tools.dedupe import (
    DEFAULT_THRESHOLD,
    HashedImages,
    build_report,
    connected_groups,
    find_duplicates,
    find_pairs,
    pixel_digest,
    popcount,
)
from data_tools.dedupe.hashing import (
    CROP_FRACTION,
    HASH_WORKING_SIZE,
    _centre,
    hash_bits,
    view_resizes,
    working_image,
)
from data_tools.parallel import Progress, parallel_map, track
from ws_dan.common.dataset_folders import DatasetImage
from ws_dan.common.images import SkippedFile, UnreadableImageError, decode_image, open_image
from ws_dan.common.outputs import save_image

LOG = logging.getLogger(__name__)


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


#: Scale set (:func:`make_scale_set`): the crop boxes (left, top, right, bottom as fractions of the photo) a
#: source photo's variants are cut from. Neighbouring boxes are shifted by a quarter of the photo, far beyond the
#: 5% border crop the finder is built to match, so the variants of one photo are distinct pictures to it.
SCALE_BOXES = ((0.0, 0.0, 0.75, 0.75), (0.25, 0.25, 1.0, 1.0), (0.25, 0.0, 1.0, 0.75), (0.0, 0.25, 0.75, 1.0))
#: Scale set: longer sides and JPEG qualities the variants are re-encoded at, in turn. Stanford Cars' training
#: photos are mostly 500 to 1,000 px wide, saved at quality 75 to 95.
SCALE_SIDES = (640, 800, 960, 512, 1024)
SCALE_QUALITIES = (90, 75, 95, 85)


def _scale_variant(src: Path, variant: int, dst: Path) -> Optional[SkippedFile]:
    # Worker: cut variant ``variant`` of ``src`` (a box, a mirror every other round, a size and a quality from
    # the lists above) and save it as a JPEG at ``dst``.
    try:
        im = open_image(src)
    except UnreadableImageError as e:
        return SkippedFile(src, e.reason)
    x0, y0, x1, y1 = SCALE_BOXES[variant % len(SCALE_BOXES)]
    im = im.crop((round(x0 * im.width), round(y0 * im.height), round(x1 * im.width), round(y1 * im.height)))
    if (variant // len(SCALE_BOXES)) % 2:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    side = SCALE_SIDES[variant % len(SCALE_SIDES)]
    scale = side / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    save_image(im, dst, "JPEG", quality=SCALE_QUALITIES[variant % len(SCALE_QUALITIES)])
    return None


def make_scale_set(sources: Sequence[Path], output_dir, n: int, workers: Optional[int] = None,
                   progress: Progress = False) -> list[Path]:
    """``n`` distinct JPEGs under ``output_dir``, cut from the real ``sources`` photos for a speed test at scale.

    Photo ``k`` is variant ``k // len(sources)`` of source ``k % len(sources)``: a crop of three quarters of it
    (:data:`SCALE_BOXES`, shifted by a quarter from one variant to the next), mirrored every other round of
    boxes, resized to a longer side of :data:`SCALE_SIDES` and saved at a quality of :data:`SCALE_QUALITIES`. So
    every file is a real photo's content, decoded at a real photo's cost, and no two are copies of each other in
    the finder's sense (the benchmark reports the groups each method finds; only the sources' own duplicates
    should show). Files are ``NNNNNN.jpg``, in folders of 1,000; existing ones are kept, so a rerun adds only
    what is missing. Unreadable sources are skipped (their slots stay empty). Returns the paths that exist.
    """
    sources = list(sources)
    if not sources:
        raise ValueError("make_scale_set: no source photos")
    out = Path(output_dir)
    paths = [out / f"{k // 1000:03d}" / f"{k:06d}.jpg" for k in range(n)]
    todo = [k for k in range(n) if not paths[k].exists()]
    results = parallel_map(_scale_star, [(sources[k % len(sources)], k // len(sources), paths[k]) for k in todo],
                           workers=workers, progress=progress, desc="scale set")
    bad = {str(r.path) for r in results if r is not None}
    if bad:
        LOG.warning("scale set: %d unreadable source photos skipped", len(bad))
    return [p for p in paths if p.exists()]


def _scale_star(job: tuple) -> Optional[SkippedFile]:
    return _scale_variant(*job)


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
    return evaluate_hash64(hashed.paths, hashed.hashes[:, 0, 0], items, threshold, same_photo)


def evaluate_hash64(paths: Sequence[Path], hash64: np.ndarray, items: Sequence[EvalImage], threshold: int = 10,
                    same_photo: Sequence[tuple[int, int]] = ()) -> dict:
    """Recall and precision (as :func:`evaluate`) of one 64-bit hash per image (``hash64[k]`` for ``paths[k]``),
    a pair being predicted when the Hamming distance is <= ``threshold``."""
    by_path = {it.path: it for it in items}
    group = _merge_groups(np.array([by_path[p].group for p in paths]), same_photo)
    kind = np.array([by_path[p].kind for p in paths])
    ph = np.asarray(hash64, dtype=np.uint64)
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


# --------------------------------------------------------------------------------------------------------------
# the full-decode baseline and imagededup, for the side-by-side benchmark

#: The baseline's working size: the gray image box-reduced to a longer side of 256 to 511 pixels.
LEGACY_WORKING_SIZE = 256


def legacy_image_hashes(image: Image.Image) -> np.ndarray:
    """The baseline's hashes: ``imagehash``'s phash, dhash, dhash_vertical and whash (64x64) of
    the gray image box-reduced to a longer side of 256-511 px, whole and centre views; shape ``(2, 4)``."""
    import imagehash

    gray = image.convert("L")
    longest = max(gray.size)
    if longest > 2 * LEGACY_WORKING_SIZE:
        gray = gray.reduce(longest // LEGACY_WORKING_SIZE)
    funcs = (imagehash.phash, imagehash.dhash, imagehash.dhash_vertical, partial(imagehash.whash, image_scale=64))
    out = np.empty((2, len(funcs)), dtype=np.uint64)
    for v, view in enumerate((gray, _centre(gray, CROP_FRACTION))):
        for k, fn in enumerate(funcs):
            bits = np.packbits(np.asarray(fn(view).hash, dtype=bool).ravel()).tobytes()
            out[v, k] = int.from_bytes(bits, "big")
    return out


def _legacy_worker(path: Path):
    try:
        image = open_image(path)
    except UnreadableImageError as e:
        return SkippedFile(Path(path), e.reason)
    return Path(path), pixel_digest(image), legacy_image_hashes(image), image.size


def legacy_hash_images(paths: Sequence[Path], workers: Optional[int] = None,
                       progress: Progress = False) -> HashedImages:
    """Hash ``paths`` the baseline's way: full decode, every pixel digest, imagehash."""
    start = time.perf_counter()
    kept, skipped = [], []
    for r in parallel_map(_legacy_worker, list(paths), workers=workers, progress=progress, desc="hashing (old)"):
        (skipped if isinstance(r, SkippedFile) else kept).append(r)
    hashes = np.stack([r[2] for r in kept]) if kept else np.zeros((0, 2, 4), np.uint64)
    sizes = np.array([r[3] for r in kept], dtype=np.int64).reshape(-1, 2)
    return HashedImages([r[0] for r in kept], [r[1] for r in kept], hashes, sizes, skipped,
                        time.perf_counter() - start)


def legacy_find_duplicates(images: Sequence[DatasetImage], threshold: int = DEFAULT_THRESHOLD,
                           workers: Optional[int] = None, progress: Progress = False):
    """The whole old job on ``images``: :func:`legacy_hash_images`, the search, the report."""
    by_path = {img.path: img for img in images}
    hashed = legacy_hash_images([img.path for img in images], workers=workers, progress=progress)
    kept = [by_path[p] for p in hashed.paths]
    start = time.perf_counter()
    ii, jj, _ = find_pairs(hashed.hashes, threshold, workers=workers)
    search = time.perf_counter() - start
    return build_report(kept, [""] * len(kept), hashed, ii, jj, threshold, search, "within", hashed.skipped, False)


def imagededup_phash(folders: Sequence[Path], workers: int = 1, threshold: Optional[int] = 10
                     ) -> tuple[dict[Path, int], Optional[dict]]:
    """imagededup's PHash, end to end as its users run it: ``encode_images`` on each folder (recursive), then its
    ``find_duplicates`` at ``threshold`` (None: skip the search). Returns ``{absolute path: 64-bit hash}`` and the
    duplicate map (keys ``folder-index/relative path``). Raises ImportError when imagededup is not installed."""
    import warnings

    from imagededup.methods import PHash

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("imagededup"):
            logging.getLogger(name).setLevel(logging.ERROR)  # it logs every step at INFO, each bad file at WARNING
    ph = PHash(verbose=False)
    hashes: dict[Path, int] = {}
    encoding: dict[str, str] = {}
    for n, folder in enumerate(folders):
        for rel, hexhash in ph.encode_images(image_dir=str(folder), recursive=True, num_enc_workers=workers).items():
            hashes[(Path(folder) / rel).resolve()] = int(hexhash, 16)
            encoding[f"{n}/{rel}"] = hexhash
    found = None
    if threshold is not None:
        with warnings.catch_warnings():  # "num_enc_workers has no effect since encodings are already provided"
            warnings.simplefilter("ignore", RuntimeWarning)
            found = ph.find_duplicates(encoding_map=encoding, max_distance_threshold=threshold,
                                       num_dist_workers=max(1, workers))
    return hashes, found


def _warm_up(method: str, images: Sequence[DatasetImage]) -> bool:
    """Run ``method`` once on a few images, untimed, so that no method pays the others' one-off costs (importing
    scipy, imagehash, imagededup; the first file reads). False when the method is not available."""
    few = list(images[:4])
    if method == "old":
        legacy_find_duplicates(few, workers=1)
    elif method == "draft":
        find_duplicates(None, workers=1, images=few)
    elif method == "imagededup":
        try:
            from imagededup.methods import PHash
        except ImportError:
            return False
        ph = PHash(verbose=False)
        for img in few:
            ph.encode_image(image_file=str(img.path))
    else:
        raise ValueError(f"unknown method {method!r}")
    return True


def time_methods(images: Sequence[DatasetImage], folders: Sequence[Path], workers: int = 1,
                 methods: Sequence[str] = ("old", "draft", "imagededup"), progress: Progress = False,
                 repeats: int = 1) -> list[dict]:
    """End-to-end seconds of each method on the same photos, in this run (so the ratios hold on a shared, noisy
    machine): ``old`` (:func:`legacy_find_duplicates`), ``draft`` (the finder,
    :func:`~data_tools.dedupe.find_duplicates`), ``imagededup`` (:func:`imagededup_phash` on ``folders``; left out
    when not installed). Each method is warmed up first (:func:`_warm_up`); with ``repeats`` > 1 the methods take
    turns and each keeps its fastest round (the least disturbed by other jobs). Each row: method, images, seconds,
    images_per_second, groups (or imagededup's images with a duplicate)."""
    methods = [m for m in methods if _warm_up(m, images)]
    best: dict[str, dict] = {}
    for _ in range(max(1, repeats)):
        for method in methods:
            start = time.perf_counter()
            if method == "old":
                report = legacy_find_duplicates(images, workers=workers, progress=progress)
                n, groups = len(report.images) + len(report.skipped), len(report.groups)
            elif method == "draft":
                report = find_duplicates(None, workers=workers, progress=progress, images=list(images))
                n, groups = len(report.images) + len(report.skipped), len(report.groups)
            else:
                hashes, found = imagededup_phash(folders, workers)
                n, groups = len(hashes), sum(1 for v in (found or {}).values() if v)
            seconds = time.perf_counter() - start
            if method not in best or seconds < best[method]["seconds"]:
                best[method] = {"method": method, "images": n, "seconds": round(seconds, 2),
                                "images_per_second": round(n / seconds, 1) if seconds > 0 else None,
                                "groups": groups}
    return [best[m] for m in methods]


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


# --------------------------------------------------------------------------------------------------------------
# where the time goes, and how the search grows


def stage_times(paths: Sequence[Path], repeats: int = 1) -> list[dict]:
    """Milliseconds per image of each stage of the two hashers, on one process, over ``paths`` (files that
    decode): the finder (read the file, decode: JPEG draft at 1/8 to 1/2, luma only; resize: the box reduction to
    the working image and the eight LANCZOS resizes; hash: the bits of the four hashes x two views) and
    imagededup's PHash (read; decode: the full RGB picture; resize: LANCZOS to 32x32, then gray; hash: its DCT and
    median, scipy). Each stage runs over all the files before the next, the files already in the page cache,
    so "read" is the cost of getting the bytes from the cache (a cold disk adds its own, the same for both). With
    ``repeats`` > 1 each stage keeps its fastest round. Rows: tool, stage, ms_per_image."""
    paths = list(paths)
    for p in paths:  # into the page cache, untimed
        p.read_bytes()

    def timed(fn, items):
        best, out = None, None
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            out = [fn(x) for x in items]
            seconds = time.perf_counter() - start
            best = seconds if best is None else min(best, seconds)
        return 1000 * best / max(1, len(items)), out

    rows = []
    read_ms, _ = timed(lambda p: p.read_bytes(), paths)
    decode_ms, decoded = timed(lambda p: decode_image(p, draft=HASH_WORKING_SIZE, gray=True), paths)
    resize_ms, small = timed(lambda d: view_resizes(working_image(d)), decoded)
    hash_ms, _ = timed(hash_bits, small)
    rows += [{"tool": "finder", "stage": s, "ms_per_image": round(v, 3)} for s, v in
             (("read", read_ms), ("decode", decode_ms), ("resize", resize_ms), ("hash", hash_ms))]
    try:
        from imagededup.methods import PHash
    except ImportError:
        return rows
    ph = PHash(verbose=False)

    def full(p):
        with Image.open(p) as im:
            im.load()
            return im if im.mode == "RGB" else im.convert("RGBA").convert("RGB")  # as imagededup's load_image

    decode_ms, decoded = timed(full, paths)
    resize_ms, small = timed(lambda im: np.array(im.resize((32, 32), Image.LANCZOS).convert("L")).astype("uint8"),
                             decoded)
    hash_ms, _ = timed(ph._hash_func, small)
    rows += [{"tool": "imagededup", "stage": s, "ms_per_image": round(v, 3)} for s, v in
             (("read", read_ms), ("decode", decode_ms), ("resize", resize_ms), ("hash", hash_ms))]
    return rows


def search_growth(sizes: Sequence[int], brute_max: int = 0, threshold: int = DEFAULT_THRESHOLD,
                  workers: Optional[int] = None, seed: int = 0) -> list[dict]:
    """Seconds of each search over ``n`` synthetic hashes for each ``n`` in ``sizes``: this finder
    (:func:`time_search`: four hashes x two views, all against all in numpy blocks) and, up to ``brute_max``
    hashes, imagededup's own search (``find_duplicates`` on an encoding map of ``n`` random 64-bit pHashes, its
    default method, at its default threshold 10), where installed. Rows: n, finder_seconds, imagededup_seconds
    (None where not run), pairs."""
    rows = []
    ph = None
    if brute_max:
        try:
            from imagededup.methods import PHash

            ph = PHash(verbose=False)
        except ImportError:
            ph = None
    for n in sizes:
        ours = time_search(n, threshold=threshold, workers=workers, seed=seed)
        theirs = None
        if ph is not None and n <= brute_max:
            import warnings

            rng = np.random.default_rng(seed)
            codes = rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
            encoding = {f"{k:07d}.jpg": f"{int(c):016x}" for k, c in enumerate(codes)}
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                ph.find_duplicates(encoding_map=encoding, max_distance_threshold=10,
                                   num_dist_workers=max(1, workers or 1))
            theirs = round(time.perf_counter() - start, 3)
        rows.append({"n": n, "pairs": n * (n - 1) // 2, "finder_seconds": ours["seconds"],
                     "imagededup_seconds": theirs,
                     "planted_found": f"{ours['planted_found']}/{ours['planted_copies']}"})
    return rows
