"""Measure the duplicate finder on real photos and altered copies of them, and the search speed.

    python scripts/benchmark_dedupe.py --data-dir ../shared/data/cars ../shared/data/flowers --output-dir /tmp/dedupe_bench

Each photo under the --data-dir folders gets seven altered copies (half size, JPEG q40, 5% border crop,
20% brighter, 3 degree rotation, grayscale, same pixels as PNG), written to OUTPUT_DIR/images (kept, so a
rerun skips the work). Then: hashing speed (images/s on -j processes), recall and precision at each
--thresholds value for all sources together and for each --data-dir alone, the single-pHash baseline
(imagededup's method, threshold 10 of 64), and the time to compare --synthetic hashes all-against-all.
Writes OUTPUT_DIR/benchmark_dedupe.json and prints a table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


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
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    return p


def main(args: argparse.Namespace) -> dict:
    from data_tools.common import DataToolError
    from data_tools.dedupe import DEFAULT_THRESHOLD, hash_images
    from data_tools.dedupe_eval import evaluate, evaluate_single_phash, make_altered_copies, time_search
    from ws_dan.io import write_json
    from ws_dan.layout import scan_dataset
    from ws_dan.outputs import check_not_nested
    from ws_dan.tables import format_table
    from ws_dan.utils import default_workers, fail, setup_logging

    log = setup_logging()
    workers = args.workers or default_workers()
    out = Path(args.output_dir)
    sources, origin = [], []
    try:
        check_not_nested(out, args.data_dir)
        for d in args.data_dir:
            images, _ = scan_dataset(d)
            if not images:
                fail(f"{d}: expected photos, found none")
            sources += [img.path for img in images]
            origin += [Path(d).name] * len(images)
    except DataToolError as e:
        fail(str(e))
    index = {p.resolve(): k for k, p in enumerate(sources)}
    same = []
    for a, b in args.same_photo:
        try:
            same.append((index[Path(a).resolve()], index[Path(b).resolve()]))
        except KeyError as e:
            fail(f"--same-photo {e.args[0]}: not one of the source photos")
    items = make_altered_copies(sources, out / "images", progress=args.progress)
    hashed = hash_images([it.path for it in items], workers=workers, progress=args.progress)
    log.info("hashed %d images in %.1f s on %d processes: %.1f images/s", len(hashed), hashed.seconds, workers,
             hashed.images_per_second)
    report: dict = {"sources": len(sources), "images": len(items), "workers": workers,
                    "hash_seconds": round(hashed.seconds, 2), "images_per_second": round(hashed.images_per_second, 2),
                    "unreadable": len(hashed.skipped), "results": []}
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
            report["results"].append(r)
            rows.append([subset, name, r["images"], f"{r['copy_recall']:.4f}", f"{r['pair_recall']:.4f}",
                         f"{r['pair_precision']:.4f}", f"{r['copies_in_original_group']:.4f}",
                         f"{r['group_pair_precision']:.4f}", r["wrong_pairs"], r["search_seconds"]])
    speed = time_search(args.synthetic, threshold=DEFAULT_THRESHOLD, workers=workers)
    report["synthetic_search"] = speed
    write_json(out / "benchmark_dedupe.json", report)
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
    print(f"report: {out / 'benchmark_dedupe.json'}")
    return report


def _subset(hashed, keep: set):
    from data_tools.dedupe import HashedImages

    idx = [k for k, p in enumerate(hashed.paths) if p in keep]
    return HashedImages([hashed.paths[k] for k in idx], [hashed.digests[k] for k in idx], hashed.hashes[idx],
                        hashed.sizes[idx], [], hashed.seconds)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
