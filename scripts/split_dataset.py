"""Combine split folders and write a new stratified train/test split (copies or hard links; sources untouched).

    python scripts/split_dataset.py --source cars/train --source cars/test --output-dir cars_75_25 --seed 0
    python scripts/split_dataset.py --source cars --output-dir cars_75_25 --group-duplicates --link

A --source is a folder of class folders (train/<class>/...) or a dataset folder whose sub-folders are all splits
(cars/ with train/ and test/: each split counts as a source). OUTPUT_DIR receives train/<class>/ and test/<class>/
(round(n * --test-ratio) test images per class), split_manifest.csv (source path, split, class, path, sha256,
duplicate group), split_classes.csv (counts per class), skipped.csv and split_report.json.
"""

from __future__ import annotations

import argparse


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write a stratified, reproducible train/test split of class folders",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--source", "-s", action="append", required=True, metavar="DIR",
                   help="a folder of class folders, or a dataset folder of split folders (repeat for several)")
    p.add_argument("--output-dir", "--od", required=True, help="new folder for train/ and test/")
    p.add_argument("--test-ratio", type=float, default=0.25, help="fraction of each class that goes to test")
    p.add_argument("--seed", type=int, default=0, help="same seed and sources -> same split")
    p.add_argument("--link", action="store_true", help="hard-link instead of copying (falls back to a copy "
                                                       "across filesystems)")
    p.add_argument("--group-duplicates", action="store_true",
                   help="keep each group of near-duplicate images on one side, so the test split does not leak")
    p.add_argument("--threshold", type=int, default=None,
                   help="near-duplicate distance for --group-duplicates (default: dedupe.py's)")
    p.add_argument("--min-per-class", type=int, default=2,
                   help="classes with fewer images go to train whole and are reported")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="decode every image and leave out unreadable ones")
    p.add_argument("--train-name", default="train", help="name of the training folder")
    p.add_argument("--test-name", default="test", help="name of the test folder")
    p.add_argument("-j", "--workers", type=int, default=None, help="processes (default: all CPU cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty output folder (its train/ and test/ are replaced)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(args: argparse.Namespace) -> dict:
    """Write the split; returns the summary (also in OUTPUT_DIR/split_report.json)."""
    from data_tools.split import split_dataset
    from ws_dan.common.runtime import RERUN_TO_FINISH, job_errors, setup_logging
    from ws_dan.common.tables import format_table

    setup_logging(verbose=args.verbose)
    with job_errors(args.output_dir, RERUN_TO_FINISH):
        result = split_dataset(
            args.source, args.output_dir, test_ratio=args.test_ratio, seed=args.seed, link=args.link,
            group_duplicates=args.group_duplicates, threshold=args.threshold, min_per_class=args.min_per_class,
            check=args.check, train_name=args.train_name, test_name=args.test_name, workers=args.workers,
            progress=args.progress, strict=args.strict, overwrite=args.overwrite)
    s = result.summary
    rows = [[r["class"], r["total"], r["train"], r["test"], r["test_fraction"], r["note"]] for r in result.per_class]
    print(format_table(rows, ["class", "images", "train", "test", "test share", "note"]))
    print()
    print(format_table([["images", s["images"]], ["train", s["train"]], ["test", s["test"]],
                        ["classes", s["classes"]], ["classes with too few images", len(s["classes_too_few"])],
                        ["renamed (same name in two sources)", s["renamed_on_collision"]],
                        ["duplicate groups kept together", s["duplicate_groups"]],
                        ["  of which span classes", s["label_conflict_groups"]],
                        ["skipped (unreadable / not images)", s["skipped"]],
                        ["copied", s["copied"]], ["hard-linked", s["linked"]],
                        ["already there (resumed)", s["already_there"]]], ["", "count"]))
    for f in result.skipped[:10]:
        print(f"  skipped {f.path}: {f.reason}")
    print(f"\nsplit written to {result.output_dir} (manifest: split_manifest.csv, report: split_report.json)")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
