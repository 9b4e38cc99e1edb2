"""Find exact and near-duplicate images in a folder tree, or test images that duplicate training images (leakage).

    python scripts/dedupe.py --data-dir my_cars --output-dir dedupe_report
    python scripts/dedupe.py --reference my_cars/train --query my_cars/test --output-dir leaks
    python scripts/dedupe.py --data-dir my_cars --output-dir dd --action quarantine   # moves the extra copies
    python scripts/dedupe.py --undo dd/quarantine_manifest.csv                         # puts them back

OUTPUT_DIR receives duplicates.csv (one row per image in a group: group, role keep/duplicate, kind exact/near,
distance to the group's first image, path, split, class, size), label_conflicts.csv (groups whose images sit in
different class folders), contact_sheet.png, skipped.csv and dedupe_report.json. --action copy-unique copies the
images to keep into OUTPUT_DIR/unique/; --action quarantine moves the duplicates (leak mode: the leaking query
images) into OUTPUT_DIR/quarantine/ and writes quarantine_manifest.csv (+ quarantine_manifest.roots.json, the
folders --undo may act in), which --undo reverses byte for byte. Nothing is moved or deleted without --action
quarantine; a symlinked image moves as the link (its target stays), and a keeper never moves.
"""

from __future__ import annotations

import argparse

from data_tools.flags import add_job_flags

DEFAULT_THRESHOLD = 36  # data_tools.dedupe.DEFAULT_THRESHOLD, repeated so that --help imports nothing heavy


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Exact and near-duplicate images; train/test leakage; quarantine + undo",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", default=None, help="one folder tree to search (all splits together)")
    p.add_argument("--reference", default=None, help="leak mode: the folder that keeps its images (e.g. train/)")
    p.add_argument("--query", default=None, help="leak mode: report its images that duplicate --reference ones")
    p.add_argument("--undo", default=None, metavar="MANIFEST",
                   help="move the files of a quarantine_manifest.csv back, then exit")
    p.add_argument("--output-dir", "--od", default=None, help="new folder for the reports (required unless --undo)")
    p.add_argument("--threshold", "-t", type=int, default=DEFAULT_THRESHOLD,
                   help="near-duplicate distance: summed Hamming distance of four 64-bit perceptual hashes (0-96)")
    p.add_argument("--exact-only", action="store_true",
                   help="only identical pixels (perceptual hashes only pick which images get the full decode)")
    p.add_argument("--action", choices=["report", "copy-unique", "quarantine"], default="report",
                   help="report only; copy the images to keep to OUTPUT_DIR/unique; or move the duplicates to "
                        "OUTPUT_DIR/quarantine (undo with --undo)")
    p.add_argument("--link", action="store_true",
                   help="copy-unique: hard-link the real files instead of copying (a copy across filesystems)")
    p.add_argument("--contact-groups", type=int, default=20, help="groups shown in contact_sheet.png (0: none)")
    add_job_flags(p, workers_help="processes for hashing (default: all CPU cores)")
    return p


def main(args: argparse.Namespace) -> dict:
    """Run; returns the summary (also written to OUTPUT_DIR/dedupe_report.json)."""
    from data_tools.dedupe import run_dedupe, undo_quarantine
    from data_tools.manifest import run_undo
    from ws_dan.common.runtime import fail, job_errors, setup_logging
    from ws_dan.common.tables import format_table

    setup_logging(verbose=args.verbose)
    if args.undo:
        return run_undo(undo_quarantine, args.undo, args.progress,
                        not_with={"--data-dir": args.data_dir, "--reference": args.reference, "--query": args.query})
    if not args.output_dir:
        fail("--output-dir is required (a new folder for duplicates.csv and the other reports)")
    with job_errors(args.output_dir,
                    "interrupted; rerun the same command to finish {} (a quarantine already started is recorded "
                    "in its manifest)"):
        report, s = run_dedupe(args.output_dir, data_dir=args.data_dir, reference_dir=args.reference,
                               query_dir=args.query, threshold=args.threshold, action=args.action, link=args.link,
                               exact_only=args.exact_only, contact_groups=args.contact_groups, workers=args.workers,
                               progress=args.progress, strict=args.strict, overwrite=args.overwrite)
    rows = [["images compared", s["images"]], ["unreadable / not images (skipped)", s["skipped"]],
            ["duplicate groups", s["groups"]], ["images in groups", s["images_in_groups"]],
            ["duplicates (to remove)", s["duplicates"]],
            ["  exact (same pixels as the keeper)", s["exact_pairs_to_keeper"]],
            ["  near", s["near_pairs_to_keeper"]],
            ["groups spanning classes (label noise)", s["label_conflict_groups"]]]
    if s["mode"] == "within":
        rows.append(["groups spanning splits (leaks)", s["cross_split_groups"]])
    else:
        rows.append(["query images leaking from the reference", s["leaked_query_images"]])
    rows += [["hashing, images/s", s["images_per_second"] or 0], ["search, seconds", s["search_seconds"]]]
    print(format_table(rows, ["", "count"]))
    for g in report.groups[:5]:
        paths = [str(report.images[m].path) for m in g.members]
        print(f"  group {g.id} ({g.kind}{', LABEL CONFLICT' if g.label_conflict else ''}): " + " | ".join(paths[:4]) +
              (" ..." if len(paths) > 4 else ""))
    if s["action"] == "copy-unique":
        print(f"unique images in {s['unique_dir']}: {s['copy']}")
    if s["action"] == "quarantine":
        q = s["quarantine"]
        print(f"moved {q['moved']} file(s) to {q['quarantine_dir']}; undo: "
              f"python scripts/dedupe.py --undo {q['manifest']}")
    print(f"reports in {args.output_dir}: duplicates.csv, label_conflicts.csv, contact_sheet.png, dedupe_report.json")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
