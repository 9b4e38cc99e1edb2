"""Dataset statistics per split and class: counts, sizes, images under an area threshold, formats; two charts.

    python scripts/dataset_stats.py --data-dir my_cars --output-dir my_cars_stats

The data folder holds train/<class>/ and test/<class>/ (or just <class>/ folders). OUTPUT_DIR receives
stats_per_class.csv (per split and class: images, width/height/area mean, min, percentiles 5/25/50/75/95, max,
images under --area-threshold, formats; class "*" = the whole split), image_sizes.csv (one row per image),
stats.json, size_histogram.png and class_balance.png. Sizes come from the file headers (fast); use
validate_images.py to decode every file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_tools.flags import add_job_flags


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Counts, image sizes and formats per split and class",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", required=True, help="dataset folder")
    p.add_argument("--output-dir", "--od", required=True, help="new folder for the tables and charts")
    p.add_argument("--area-threshold", type=int, default=128 * 256,
                   help="images with fewer pixels count as small (128x256: the super-resolution trigger)")
    add_job_flags(p, strict_help="stop at the first image whose header cannot be read")
    return p


def main(args: argparse.Namespace) -> dict:
    """Measure; returns the content of OUTPUT_DIR/stats.json."""
    from data_tools.stats import dataset_stats
    from ws_dan.common.io import read_csv_rows
    from ws_dan.common.runtime import job_errors, setup_logging
    from ws_dan.common.tables import format_table

    setup_logging(verbose=args.verbose)
    with job_errors(args.output_dir):
        s = dataset_stats(args.data_dir, args.output_dir, area_threshold=args.area_threshold, workers=args.workers,
                          progress=args.progress, strict=args.strict, overwrite=args.overwrite)
    rows = []
    for r in read_csv_rows(Path(args.output_dir) / "stats_per_class.csv"):
        rows.append([r["split"], r["class"] or "(no class)", int(r["images"]), int(r["small"]),
                     f"{float(r['width_median']):.0f}x{float(r['height_median']):.0f}",
                     f"{float(r['area_p5']):.0f}", f"{float(r['area_median']):.0f}", f"{float(r['area_p95']):.0f}",
                     r["formats"]])
    print(format_table(rows, ["split", "class", "images", f"< {args.area_threshold} px", "median WxH", "area p5",
                              "area median", "area p95", "formats"]))
    for split, b in s["class_balance"].items():
        print(f"{split}: {b['min_per_class']} to {b['max_per_class']} images per class (ratio {b['max_over_min']})")
    if s.get("images_per_license"):
        print("images per licence (ATTRIBUTION.csv): "
              + ", ".join(f"{name} {n}" for name, n in s["images_per_license"].items()))
    if s["skipped"]:
        print(f"{s['skipped']} file(s) skipped (not images or unreadable headers); see stats.json")
    print(f"tables and charts in {args.output_dir}: stats_per_class.csv, image_sizes.csv, stats.json, "
          f"size_histogram.png, class_balance.png")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
