"""Measure the duplicate finder on real photos and altered copies of them, and the search speed.

    python scripts/benchmark_dedupe.py --data-dir ../shared/data/cars ../shared/data/flowers --od /tmp/dedupe_bench
    python scripts/benchmark_dedupe.py --output-dir /tmp/dedupe_bench -j 1 --parts speed   # speed only

Quality (--parts quality): each photo under the --data-dir folders gets seven altered copies (half size, JPEG
q40, 5% border crop, 20% brighter, 3 degree rotation, grayscale, same pixels as PNG), written to
OUTPUT_DIR/images (kept, so a rerun skips the work). Then: hashing speed (images/s on -j processes), recall and
precision at each --thresholds value for all sources together and for each --data-dir alone, the single-pHash
baseline (imagededup's method, threshold 10 of 64), and the time to compare --synthetic hashes all-against-all.

Speed (--parts speed): the whole job end to end (scan, hash, search, report) on the photos under --speed-dirs,
for each of --methods one after the other in this run, so the ratios hold on a shared machine: "draft" (the
finder: JPEGs decoded at reduced scale, pixel digests only for exact candidates), "old" (every file decoded in
full, every pixel digest, the imagehash library) and "imagededup" (its PHash encode_images +
find_duplicates, where the package is installed; it is optional). One table puts them side by side: images/s,
seconds, ratios, and each method's recall / precision on the altered copies.
Writes OUTPUT_DIR/benchmark_dedupe.json and prints the tables.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = ("draft", "old", "imagededup")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark dedupe: recall/precision on altered copies, speed",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", nargs="+",
                   default=[str(_SHARED / "cars"), str(_SHARED / "flowers"), str(_SHARED / "dedup" / "base_images")],
                   help="folders of distinct real photos (searched recursively)")
    p.add_argument("--output-dir", "--od", required=True, help="work folder for the altered copies and the report")
    p.add_argument("--thresholds", type=int, nargs="+", default=[28, 32, 36, 40, 44], help="thresholds to score")
    p.add_argument("--synthetic", type=int, default=20000, help="hashes compared all-against-all for the timing")
    p.add_argument("--same-photo", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="two source files known to show the same photo (their copies count as one group)")
    p.add_argument("-j", "--workers", type=int, default=None, help="processes for hashing, threads for the search "
                                                                    "(default: all cores)")
    p.add_argument("--speed-dirs", nargs="+",
                   default=[str(_SHARED / "cars_dev"), str(_SHARED / "cars"), str(_SHARED / "flowers")],
                   help="folders of real photos timed end to end (searched recursively)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="what to compare side by side (imagededup is skipped where it is not installed)")
    p.add_argument("--repeats", type=int, default=1,
                   help="speed: rounds (the methods take turns); each method keeps its fastest")
    p.add_argument("--parts", nargs="+", choices=["quality", "speed"], default=["quality", "speed"],
                   help="quality: recall/precision on the altered copies; speed: end-to-end time on --speed-dirs")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    return p


def main(args: argparse.Namespace) -> dict:
    from ws_dan.common.io import InputError
    from ws_dan.common.runtime import default_workers, fail, setup_logging

    setup_logging()
    workers = args.workers or default_workers()
    out = Path(args.output_dir)
    report: dict = {"workers": workers}
    try:
        from ws_dan.common.outputs import check_not_nested

        check_not_nested(out, list(args.data_dir) + list(args.speed_dirs))
        quality = _quality(args, out, workers, report) if "quality" in args.parts else {}
        speed = _speed(args, workers) if "speed" in args.parts else []
    except InputError as e:
        fail(str(e))
    report["speed"] = speed
    _comparison(args, quality, speed, report)
    from ws_dan.common.io import write_json

    write_json(out / "benchmark_dedupe.json", report)
    print(f"report: {out / 'benchmark_dedupe.json'}")
    return report


def _sources(folders):
    from ws_dan.common.dataset_folders import scan_dataset
    from ws_dan.common.runtime import fail

    images = []
    for d in folders:
        found, _ = scan_dataset(d)
        if not found:
            fail(f"{d}: expected photos, found none")
        images.append(found)
    return images


def _quality(args, out: Path, workers: int, report: dict) -> dict:
    """Recall / precision on the altered copies; returns {method: (hashing images/s, scores at the default)}."""
    from data_tools.dedupe import DEFAULT_THRESHOLD, hash_images
    from data_tools.dedupe_eval import make_altered_copies, time_search

    log = logging.getLogger("benchmark_dedupe")
    sources, origin, same = _photos(args)  # the source photos, their --data-dir, the --same-photo pairs
    items = make_altered_copies(sources, out / "images", progress=args.progress)
    paths = [it.path for it in items]
    hashed = hash_images(paths, workers=workers, progress=args.progress, digests=False)
    log.info("hashed %d images in %.1f s on %d processes: %.1f images/s", len(hashed), hashed.seconds, workers,
             hashed.images_per_second)
    report.update({"sources": len(sources), "images": len(items), "hash_seconds": round(hashed.seconds, 2),
                   "images_per_second": round(hashed.images_per_second, 2), "unreadable": len(hashed.skipped),
                   "results": []})
    rows = _score_subsets(args, hashed, items, sources, origin, same, workers, report["results"])
    speed = time_search(args.synthetic, threshold=DEFAULT_THRESHOLD, workers=workers)
    report["synthetic_search"] = speed
    _print_quality(rows, report, hashed, speed, workers)
    return _method_scores(args, out, hashed, items, same, workers)


def _photos(args) -> tuple[list[Path], list[str], list[tuple[int, int]]]:
    from ws_dan.common.runtime import fail

    sources, origin = [], []
    for d, images in zip(args.data_dir, _sources(args.data_dir)):
        sources += [img.path for img in images]
        origin += [Path(d).name] * len(images)
    index = {p.resolve(): k for k, p in enumerate(sources)}
    same = []
    for a, b in args.same_photo:
        try:
            same.append((index[Path(a).resolve()], index[Path(b).resolve()]))
        except KeyError as e:
            fail(f"--same-photo {e.args[0]}: not one of the source photos")
    return sources, origin, same


def _score_subsets(args, hashed, items, sources: list[Path], origin: list[str], same: list, workers: int,
                   results_out: list) -> list[list]:
    """Each method (one pHash; the finder at each --thresholds value) on all sources together and, with several
    --data-dir, on each alone; the results appended to ``results_out``, the table rows returned."""
    from data_tools.dedupe_eval import evaluate, evaluate_single_phash

    rows = []
    subsets = {"all": None}
    if len(args.data_dir) > 1:
        for name in dict.fromkeys(origin):
            subsets[name] = {g for g, o in enumerate(origin) if o == name}
    for subset, groups in subsets.items():
        keep = [it for it in items if groups is None or it.group in groups]
        sub = _subset(hashed, {it.path for it in keep})
        pairs = [(a, b) for a, b in same if groups is None or (a in groups and b in groups)]
        base = evaluate_single_phash(sub, keep, 10, pairs)
        results = [("one pHash (imagededup-style), t=10/64", base)]
        results += [(f"4 hashes x 2 views, t={t}/256", evaluate(sub, keep, t, pairs, workers)) for t in args.thresholds]
        for name, r in results:
            r = dict(r, subset=subset, method=name,
                     wrong_photo_pairs=[(str(sources[a]), str(sources[b])) for a, b in r["wrong_group_pairs"]])
            results_out.append(r)
            rows.append([subset, name, r["images"], f"{r['copy_recall']:.4f}", f"{r['pair_recall']:.4f}",
                         f"{r['pair_precision']:.4f}", f"{r['copies_in_original_group']:.4f}",
                         f"{r['group_pair_precision']:.4f}", r["wrong_pairs"], r["search_seconds"]])
    return rows


def _print_quality(rows: list[list], report: dict, hashed, speed: dict, workers: int) -> None:
    from ws_dan.common.tables import format_table

    print(format_table(rows, ["set", "method", "images", "copy recall", "pair recall", "pair precision",
                              "copies in group", "group precision", "wrong pairs", "search s"]))
    print()
    best = [r for r in report["results"] if r["subset"] == "all"]
    for r in best:
        print(f"{r['method']}: recall by alteration " +
              ", ".join(f"{k} {v:.3f}" for k, v in r["copy_recall_by_kind"].items()))
        for a, b in r["wrong_photo_pairs"][:5]:
            print(f"    matched different photos: {a} <-> {b}")
    print()
    print(f"hashing: {report['images_per_second']:.1f} images/s on {workers} processes "
          f"({len(hashed)} images, {hashed.seconds:.1f} s)")
    print(f"search: {speed['images']} hashes all-against-all ({speed['pairs_compared']:,} pairs) in "
          f"{speed['seconds']:.2f} s on {workers} threads; planted copies found {speed['planted_found']}/"
          f"{speed['planted_copies']}")
    print()


def _method_scores(args, out: Path, hashed, items, same: list, workers: int) -> dict:
    """The same altered copies scored for each compared method, at its default threshold:
    {method: (hashing images/s, scores)}."""
    import time

    from data_tools.dedupe import DEFAULT_THRESHOLD
    from data_tools.dedupe_eval import evaluate, evaluate_hash64, imagededup_phash, legacy_hash_images

    paths = [it.path for it in items]
    quality = {"draft": (hashed.images_per_second, evaluate(hashed, items, DEFAULT_THRESHOLD, same, workers))}
    if "old" in args.methods:
        old = legacy_hash_images(paths, workers=workers, progress=args.progress)
        quality["old"] = (old.images_per_second, evaluate(old, items, DEFAULT_THRESHOLD, same, workers))
    if "imagededup" in args.methods:
        start = time.perf_counter()
        try:
            found, _ = imagededup_phash([out / "images"], workers, threshold=None)
        except ImportError:
            found = None
        if found is not None:
            seconds = time.perf_counter() - start
            known = [p for p in paths if p.resolve() in found]
            quality["imagededup"] = (len(paths) / seconds, evaluate_hash64(
                known, [found[p.resolve()] for p in known], items, 10, same))
    return quality


def _speed(args, workers: int) -> list:
    from data_tools.dedupe_eval import time_methods

    images = [img for found in _sources(args.speed_dirs) for img in found]
    methods = [m for m in ("draft", "old", "imagededup") if m in args.methods]
    return time_methods(images, [Path(d) for d in args.speed_dirs], workers, methods, progress=args.progress,
                        repeats=args.repeats)


_LABELS = {"draft": "this finder: draft decode, digests on demand (4 hashes x 2 views, t=36)",
           "old": "old path: full decode, every digest, imagehash (t=36)",
           "imagededup": "imagededup PHash (t=10/64)"}


def _comparison(args, quality: dict, speed: list, report: dict) -> None:
    """The side-by-side table: end-to-end speed on the real photos and quality on the altered copies."""
    from ws_dan.common.tables import format_table

    by = {r["method"]: r for r in speed}
    methods = [m for m in ("draft", "old", "imagededup") if m in by or m in quality]
    rows, table = [], []

    def ratio(m, ref):
        if m in by and ref in by and by[m]["seconds"]:
            return round(by[ref]["seconds"] / by[m]["seconds"], 2)
        return None

    for m in methods:
        sp, q = by.get(m, {}), quality.get(m, (None, {}))
        row = {"method": m, "images": sp.get("images"), "seconds": sp.get("seconds"),
               "images_per_second": sp.get("images_per_second"), "speedup_vs_imagededup": ratio(m, "imagededup"),
               "speedup_vs_old": ratio(m, "old"), "altered_images_per_second": round(q[0], 1) if q[0] else None,
               "copy_recall": q[1].get("copy_recall"), "pair_recall": q[1].get("pair_recall"),
               "pair_precision": q[1].get("pair_precision"), "wrong_pairs": q[1].get("wrong_pairs")}
        rows.append(row)

        def f(v, spec=".3f"):
            return "-" if v is None else format(v, spec)

        table.append([_LABELS[m], f(row["images"], "d"), f(row["seconds"], ".1f"), f(row["images_per_second"], ".1f"),
                      f(row["speedup_vs_imagededup"], ".2f"), f(row["speedup_vs_old"], ".2f"),
                      f(row["altered_images_per_second"], ".1f"), f(row["copy_recall"]), f(row["pair_recall"]),
                      f(row["pair_precision"]), f(row["wrong_pairs"], "d")])
    report["comparison"] = rows
    if not table:
        return
    print(f"side by side, -j {report['workers']} (speed: the whole job on --speed-dirs; quality: the altered copies)")
    print(format_table(table, ["method", "photos", "seconds", "images/s", "x imagededup", "x old",
                               "altered images/s", "copy recall", "pair recall", "pair precision", "wrong pairs"]))
    if "imagededup" in args.methods and "imagededup" not in methods:
        print("imagededup is not installed: its rows are left out (pip install imagededup to compare)")


def _subset(hashed, keep: set):
    from data_tools.dedupe import HashedImages

    idx = [k for k, p in enumerate(hashed.paths) if p in keep]
    return HashedImages([hashed.paths[k] for k in idx], [hashed.digests[k] for k in idx], hashed.hashes[idx],
                        hashed.sizes[idx], [], hashed.seconds)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
