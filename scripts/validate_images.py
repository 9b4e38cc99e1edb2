"""List unreadable, truncated, tiny, odd-mode and mis-named images and non-images; optionally fix them.

    python scripts/validate_images.py --data-dir my_cars --output-dir my_cars_check
    python scripts/validate_images.py --data-dir my_cars --output-dir my_cars_clean --fix

OUTPUT_DIR receives validation.csv (a row per file: status ok/attention/unreadable/not_image, the issues, format,
mode, size) and validation_report.json. With --fix, OUTPUT_DIR/fixed/ is a usable copy of the dataset: JPEGs
copied unchanged, every other readable image (PNG, WebP, BMP, GIF, TIFF, CMYK, palette, alpha, 16-bit, a PNG
named .jpg) re-encoded to an upright RGB JPEG named .jpg; unreadable files and non-images are left out.
The input folder is never changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_tools.flags import add_job_flags


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Check every image of a dataset; --fix writes an all-JPEG copy",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", required=True, help="folder to check (searched recursively)")
    p.add_argument("--output-dir", "--od", required=True, help="new folder for the report (and fixed/)")
    p.add_argument("--fix", action="store_true", help="write OUTPUT_DIR/fixed/: the dataset as RGB JPEGs")
    p.add_argument("--min-side", type=int, default=32, help="images with a shorter side are reported as tiny")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images")
    p.add_argument("--link", action="store_true", help="--fix: hard-link the JPEGs kept as they are")
    add_job_flags(p, strict_help="stop at the first unreadable file or non-image")
    return p


def main(args: argparse.Namespace) -> dict:
    """Check (and fix); returns the summary (also in OUTPUT_DIR/validation_report.json)."""
    from data_tools.validate import validate_images
    from ws_dan.common.io import InputError, read_csv_rows
    from ws_dan.common.runtime import fail, setup_logging
    from ws_dan.common.tables import format_table

    setup_logging(verbose=args.verbose)
    try:
        s = validate_images(args.data_dir, args.output_dir, fix=args.fix, min_side=args.min_side,
                            quality=args.quality, link=args.link, workers=args.workers, progress=args.progress,
                            strict=args.strict, overwrite=args.overwrite)
    except InputError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted; files already written are complete: run the same command again to finish "
             f"{args.output_dir}", code=130)
    print(format_table([[k, s[k]] for k in ("files", "ok", "attention", "unreadable", "not_image", "convertible")],
                       ["status", "files"]))
    if s["issues"]:
        print()
        print(format_table([[k, v] for k, v in s["issues"].items()], ["issue", "files"]))
    rows = [r for r in read_csv_rows(Path(args.output_dir) / "validation.csv") if r["status"] != "ok"]
    for r in rows[:15]:
        print(f"  {r['status']:10s} {r['path']}: {r['issues']}")
    if len(rows) > 15:
        print(f"  ... {len(rows) - 15} more in validation.csv")
    if args.fix:
        print(f"\nfixed copy in {s['fixed_dir']}: {s['fixed']}")
    print(f"report: {Path(args.output_dir) / 'validation.csv'}")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
