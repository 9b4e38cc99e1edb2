"""Merge a folder of new class folders into a training split, skipping images it already has.

    python scripts/merge_data.py --new-dir downloads --train-dir my_cars/train --also-check my_cars/test \
        --output-dir merged
    python scripts/merge_data.py --new-dir downloads --train-dir my_cars/train --output-dir merge_log --in-place
    python scripts/merge_data.py --undo merge_log/merge_added.csv      # removes what --in-place added

A new image is left out when it is unreadable, duplicates (exact or near, as dedupe.py) an image of the training
split or of an --also-check folder, duplicates another new image, or sits in a class folder the training split
lacks (the run stops and names such classes unless --allow-new-classes). By default OUTPUT_DIR/train/ becomes
the merged split (existing images copied, or hard-linked with --link) and the training folder is only read;
--in-place copies the accepted images into the training folder itself (never replacing a file). OUTPUT_DIR
receives merge_added.csv (what was added, with SHA-256: the undo list) and merge_added.roots.json (the folder
--undo may delete from; rows outside it are refused), merge_rejected.csv (what was left out and why) and
merge_report.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_tools.flags import add_job_flags

DEFAULT_THRESHOLD = 36  # data_tools.dedupe.DEFAULT_THRESHOLD, repeated so that --help imports nothing heavy


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Add new class-folder images to a training split, without duplicates",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--new-dir", "--data-dir", "--dd", dest="new_dir", default=None,
                   help="folder of new images in class folders")
    p.add_argument("--train-dir", default=None, help="the training split (<class>/ folders) to merge into")
    p.add_argument("--output-dir", "--od", default=None,
                   help="new folder for the merged split (OUTPUT_DIR/train) or, with --in-place, the reports")
    p.add_argument("--also-check", action="append", default=[], metavar="DIR",
                   help="more folders whose images must not be added again (e.g. the test split); repeatable")
    p.add_argument("--in-place", action="store_true", help="copy the accepted images into --train-dir itself")
    p.add_argument("--allow-new-classes", action="store_true", help="accept class folders train does not have")
    p.add_argument("--threshold", "-t", type=int, default=DEFAULT_THRESHOLD, help="near-duplicate distance (0-96)")
    p.add_argument("--exact-only", action="store_true", help="reject identical pixels only")
    p.add_argument("--link", action="store_true", help="hard-link instead of copying (not with --in-place)")
    p.add_argument("--undo", default=None, metavar="MERGE_ADDED_CSV",
                   help="remove the files an earlier merge added (unchanged ones only), then exit")
    add_job_flags(p, workers_help="processes for hashing (default: all CPU cores)")
    return p


def main(args: argparse.Namespace) -> dict:
    """Merge; returns the summary (also in OUTPUT_DIR/merge_report.json)."""
    from data_tools.manifest import run_undo
    from data_tools.merge import merge_data, undo_merge
    from ws_dan.common.io import read_csv_rows
    from ws_dan.common.runtime import fail, job_errors, setup_logging
    from ws_dan.common.tables import format_table

    setup_logging(verbose=args.verbose)
    if args.undo:
        return run_undo(undo_merge, args.undo, args.progress, left="left in place")
    missing = [f for f, v in (("--new-dir", args.new_dir), ("--train-dir", args.train_dir),
                              ("--output-dir", args.output_dir)) if not v]
    if missing:
        fail(f"{', '.join(missing)} required (or --undo MERGE_ADDED_CSV)")
    with job_errors(args.output_dir,
                    "interrupted; rerun the same command to finish (what was added so far is recorded in {})"):
        s = merge_data(args.new_dir, args.train_dir, args.output_dir, in_place=args.in_place,
                       also_check=args.also_check, allow_new_classes=args.allow_new_classes, threshold=args.threshold,
                       exact_only=args.exact_only, link=args.link, workers=args.workers, progress=args.progress,
                       strict=args.strict, overwrite=args.overwrite)
    rows = [["new images", s["new_images"]], ["added", s["added"]], ["rejected", s["rejected"]]]
    rows += [[f"  {k}", v] for k, v in s["rejected_by_reason"].items()]
    if s["new_classes"]:
        rows.append(["new classes", len(s["new_classes"])])
    print(format_table(rows, ["", "count"]))
    for r in read_csv_rows(Path(args.output_dir) / "merge_rejected.csv")[:10]:
        other = f" {r['duplicate_of']} ({r['kind']}, d={r['distance']})" if r.get("duplicate_of") else ""
        print(f"  left out {r['source']}: {r['reason']}{other}")
    print(f"merged split: {s['merged_dir']}; lists in {args.output_dir}: merge_added.csv, merge_rejected.csv")
    if s["in_place"]:
        print(f"undo: python scripts/merge_data.py --undo {Path(args.output_dir) / 'merge_added.csv'}")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
