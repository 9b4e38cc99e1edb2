"""Score downloaded images with a wanted/unwanted cleaner; report or quarantine the unwanted ones (undoable).

    python scripts/clean_images.py --data-dir downloads --ckpt-path runs/cleaner/cleaner.pt --output-dir cleaned
    python scripts/clean_images.py --data-dir downloads --ckpt-path runs/cleaner/cleaner.pt --output-dir cleaned \\
        --threshold 0.6 --action quarantine
    python scripts/clean_images.py --undo cleaned/quarantine_manifest.csv          # puts every image back
    python scripts/merge_data.py --new-dir downloads --train-dir my_cars/train --also-check my_cars/test \
        --output-dir merged

DATA_DIR is a folder of class folders (download_images.py's output); CKPT_PATH the cleaner.pt of train_cleaner.py.
OUTPUT_DIR (new, outside DATA_DIR) receives clean_scores.csv (path, class, p_unwanted, decision; highest
p_unwanted first), contact_sheet.png (the images it would remove, to check by eye before quarantining) and
clean_report.json. Nothing is moved unless --action quarantine: then every image with p_unwanted >= --threshold
moves to QUARANTINE_DIR/<class>/unwanted/ (default OUTPUT_DIR/quarantine; it must be outside DATA_DIR, where
merge_data.py would take an unwanted/ sub-folder for part of the class) and quarantine_manifest.csv records each
move, written before the first one; --undo MANIFEST moves them back, checking each file's SHA-256.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Find (and quarantine) unwanted downloads with a wanted/unwanted cleaner",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", default=None, help="folder of class folders of new images")
    p.add_argument("--ckpt-path", "--cp", default=None, help="cleaner checkpoint (train_cleaner.py's cleaner.pt)")
    p.add_argument("--output-dir", "--od", default=None,
                   help="new folder for the scores, contact sheet and report (default: DATA_DIR + '_clean')")
    p.add_argument("--threshold", type=float, default=0.5, help="remove images with p(unwanted) at or above this")
    p.add_argument("--action", choices=["report", "quarantine"], default="report",
                   help="report only, or move the unwanted images to QUARANTINE_DIR/<class>/unwanted/")
    p.add_argument("--quarantine-dir", default=None,
                   help="where quarantined images go (default: OUTPUT_DIR/quarantine; outside DATA_DIR)")
    p.add_argument("--undo", default=None, metavar="MANIFEST",
                   help="move the images of a quarantine_manifest.csv back, then exit")
    p.add_argument("--contact-max", type=int, default=64, help="images shown in contact_sheet.png (0: none)")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("-j", "--workers", type=int, default=None, help="data loading processes (default: CPU count)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(args: argparse.Namespace) -> dict:
    """Score (and quarantine, or undo); returns the summary (also in OUTPUT_DIR/clean_report.json)."""
    from data_tools.clean import clean_images, undo_clean
    from data_tools.manifest import run_undo
    from ws_dan.common.io import InputError, os_error_message
    from ws_dan.common.runtime import default_workers, fail, setup_logging
    from ws_dan.common.tables import format_table
    from ws_dan.models.checkpoint import CheckpointError

    setup_logging(verbose=args.verbose)
    if args.undo:
        return run_undo(undo_clean, args.undo, args.progress,
                        not_with={"--data-dir": args.data_dir, "--ckpt-path": args.ckpt_path})
    if not args.data_dir or not args.ckpt_path:
        fail("--data-dir and --ckpt-path are required (or --undo MANIFEST)")
    output_dir = args.output_dir or str(Path(args.data_dir).resolve()) + "_clean"
    workers = default_workers() if args.workers is None else args.workers
    try:
        s = clean_images(args.data_dir, args.ckpt_path, output_dir, threshold=args.threshold, action=args.action,
                         quarantine_dir=args.quarantine_dir, batch_size=args.batch_size, workers=workers,
                         device=args.device, contact_max=args.contact_max, progress=args.progress,
                         overwrite=args.overwrite)
    except (InputError, CheckpointError, RuntimeError) as e:  # InputError: also a refused write, a locked folder
        fail(str(e))
    except OSError as e:
        fail(os_error_message(e, output_dir))
    except KeyboardInterrupt:
        fail(f"interrupted; moves already made are recorded in {Path(output_dir) / 'quarantine_manifest.csv'} "
             f"(--undo restores them)", code=130)
    rows = [["images scored", s["images"]], ["unreadable (skipped)", s["unreadable"]],
            [f"p_unwanted >= {s['threshold']:g} (to remove)", s["to_remove"]], ["kept", s["kept"]]]
    print(format_table(rows, ["", "count"]))
    if len(s["per_class"]) <= 30:
        print(format_table([[c or "(no class)", v["images"], v["remove"]] for c, v in s["per_class"].items()],
                           ["class", "images", "remove"]))
    print(f"scores: {s['scores']}" + (f"; contact sheet: {s['contact_sheet']}" if s["contact_sheet"] else ""))
    if s["action"] == "quarantine":
        q = s["quarantine"]
        print(f"moved {q['moved']} image(s) to {q['quarantine_dir']}/<class>/unwanted/; undo: "
              f"python scripts/clean_images.py --undo {q['manifest']}")
    elif s["to_remove"]:
        print("nothing moved (--action report); check the contact sheet, then rerun with --action quarantine")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
