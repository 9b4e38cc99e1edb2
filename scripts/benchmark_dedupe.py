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
At scale (--scale N): N distinct JPEGs are cut from the photos under --scale-sources (every photo folder of
../shared/data by default: each variant a shifted three-quarter crop, mirrored every other round, re-encoded at
512 to 1,024 px and quality 75 to 95, so decoding costs what a real photo's does) into OUTPUT_DIR/scale_N (kept
for reruns), and the speed part runs on them instead of --speed-dirs:

    python scripts/benchmark_dedupe.py --od /tmp/dedupe_bench --scale 8144 --parts speed stages growth --repeats 2

Stages (--parts stages): milliseconds per image of read / decode / resize / hash for the finder and for
imagededup, on one process over --stage-images of the timed photos. Growth (--parts growth): the search alone
over --growth-sizes synthetic hash sets, the finder against imagededup's own search (up to --brute-max hashes).
Writes OUTPUT_DIR/benchmark_dedupe.json and prints the tables.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
_SCALE_SOURCES = ("cars", "cars_dev", "cars_lookalike", "flowers", "grab", "sr", "dedup/base_images")
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
    p.add_argument("--parts", nargs="+", choices=["quality", "speed", "stages", "growth"],
                   default=["quality", "speed"],
                   help="quality: recall/precision on the altered copies; speed: end-to-end time on --speed-dirs "
                        "(or the --scale set); stages: ms per image of each stage; growth: the search alone")
    p.add_argument("--scale", type=int, default=0, metavar="N",
                   help="time speed and stages on N distinct JPEGs cut from --scale-sources (0: --speed-dirs)")
    p.add_argument("--scale-sources", nargs="+", default=[str(_SHARED / d) for d in _SCALE_SOURCES],
                   help="folders of real photos the --scale set is cut from (searched recursively)")
    p.add_argument("--stage-images", type=int, default=1000, help="photos the per-stage timing runs on")
    p.add_argument("--growth-sizes", type=int, nargs="+", default=[8000, 16000, 32000, 64000, 128000],
                   help="synthetic hash-set sizes for the search growth")
    p.add_argument("--brute-max", type=int, default=32000,
                   help="largest set imagededup's search is timed on (it grows with the square of the set)")
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

        check_not_nested(out, list(args.data_dir) + list(args.speed_dirs) +
                         (list(args.scale_sources) if args.scale else []))
        quality = _quality(args, out, workers, report) if "quality" in args.parts else {}
        timed = _scale_set(args, out, workers, report) if args.scale else None
        speed = _speed(args, workers, timed) if "speed" in args.parts else []
        if "stages" in args.parts:
            report["stages"] = _stages(args, timed)
        if "growth" in args.parts:
            report["growth"] = _growth(args, workers)
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


def _scale_set(args, out: Path, workers: int, report: dict) -> Path:
    """Build (or complete) the --scale set; returns its folder."""
    from data_tools.dedupe_eval import make_scale_set

    sources = [img.path for found in _sources(args.scale_sources) for img in found]
    folder = out / f"scale_{args.scale}"
    made = make_scale_set(sources, folder, args.scale, workers=workers, progress=args.progress)
    report["scale"] = {"photos": len(made), "sources": len(sources), "folder": str(folder)}
    print(f"scale set: {len(made)} JPEGs cut from {len(sources)} source photos in {folder}")
    return folder


def _timed_images(args, timed):
    folders = [timed] if timed is not None else [Path(d) for d in args.speed_dirs]
    return [img for found in _sources(folders) for img in found], folders


def _speed(args, workers: int, timed=None) -> list:
    from data_tools.dedupe_eval import time_methods

    images, folders = _timed_images(args, timed)
    methods = [m for m in ("draft", "old", "imagededup") if m in args.methods]
    return time_methods(images, folders, workers, methods, progress=args.progress, repeats=args.repeats)


def _stages(args, timed) -> list:
    from data_tools.dedupe_eval import stage_times
    from ws_dan.common.tables import format_table

    images, _ = _timed_images(args, timed)
    step = max(1, len(images) // max(1, args.stage_images))  # spread over the set, not its first folder
    sample = [img.path for img in images[::step][:args.stage_images]]
    rows = stage_times(sample, repeats=args.repeats)
    by = {(r["tool"], r["stage"]): r["ms_per_image"] for r in rows}
    tools = list(dict.fromkeys(r["tool"] for r in rows))
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    for t in tools:
        by[t, "total"] = sum(by[t, s] for s in stages)
    table = []
    for s in stages + ["total"]:
        ratio = [f"{by[tools[1], s] / by[tools[0], s]:.2f}" if by[tools[0], s] else "-"] if len(tools) == 2 else []
        table.append([s] + [f"{by[t, s]:.3f}" for t in tools] + ratio)
    print(f"where the time goes: ms per image on one process, {len(sample)} photos")
    print(format_table(table, ["stage"] + [f"{t} ms" for t in tools] + (["x faster"] if len(tools) == 2 else [])))
    print()
    return rows


def _growth(args, workers: int) -> list:
    from data_tools.dedupe_eval import search_growth
    from ws_dan.common.tables import format_table

    rows = search_growth(args.growth_sizes, brute_max=args.brute_max if "imagededup" in args.methods else 0,
                         workers=workers)

    def f(v):
        return "-" if v is None else f"{v:.2f}"

    print(f"search alone, synthetic hashes, -j {workers} (imagededup: its find_duplicates on 64-bit pHashes)")
    print(format_table([[f"{r['n']:,}", f"{r['pairs']:,}", f(r["finder_seconds"]), f(r["imagededup_seconds"]),
                         f(r["imagededup_seconds"] / r["finder_seconds"]) if r["imagededup_seconds"] else "-",
                         r["planted_found"]] for r in rows],
                       ["hashes", "pairs", "finder s", "imagededup s", "x faster", "planted copies found"]))
    print()
    return rows


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
