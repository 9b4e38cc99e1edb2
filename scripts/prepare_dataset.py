"""Prepare a standard fine-grained benchmark from its official files: OUT/train/<class>/ and OUT/test/<class>/.

    python scripts/prepare_dataset.py stanford-cars --source raw/stanford_cars --output-dir data/cars
    python scripts/prepare_dataset.py cub-200-2011 --source raw/CUB_200_2011 --output-dir data/cub --crop-bbox
    python scripts/prepare_dataset.py fgvc-aircraft --source raw/fgvc-aircraft-2013b --output-dir data/air --trainval
    python scripts/prepare_dataset.py stanford-dogs --source raw/dogs --output-dir data/dogs --copy

NAME is stanford-cars, cub-200-2011, fgvc-aircraft or stanford-dogs (cars, cub, aircraft, dogs also work);
--source is the folder the dataset's archives were extracted into (see data_tools/prepare.py for what each
must hold). Images are hard-linked (--copy: copied); FGVC-Aircraft images lose their 20-pixel copyright banner
and, with --crop-bbox, every image is cropped to its annotated box (both written as new JPEGs). OUTPUT_DIR also
gets classes.csv, prepare_manifest.csv, skipped.csv and prepare_report.json.
"""

from __future__ import annotations

import argparse

from data_tools.flags import add_job_flags
from data_tools.prepare import BENCHMARKS, DEFAULT_QUALITY
from ws_dan.common.cli_types import bounded_int


def _dataset(text: str) -> str:
    from data_tools.prepare import benchmark_name
    from ws_dan.common.io import InputError

    try:
        return benchmark_name(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Write a standard fine-grained benchmark's official train/test split "
                                            "as class folders", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                add_help=add_help)
    p.add_argument("name", type=_dataset, metavar="NAME", help=f"the dataset: {', '.join(BENCHMARKS)}")
    p.add_argument("--source", "-s", required=True, metavar="RAW",
                   help="the folder the official archives were extracted into (read only)")
    p.add_argument("--output-dir", "--od", required=True, help="new folder for train/ and test/")
    p.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")
    p.add_argument("--trainval", action="store_true",
                   help="FGVC-Aircraft: merge the train and val lists into train/, as papers report it "
                        "(without it, val/ is written as a third split)")
    p.add_argument("--crop-bbox", action="store_true",
                   help="write every image cropped to its annotated bounding box")
    p.add_argument("--quality", type=bounded_int(1, 100), default=DEFAULT_QUALITY,
                   help="JPEG quality of the images written anew (banner removed, box crops)")
    add_job_flags(p, workers_help="processes for cropping (default: all CPU cores; links and copies use one)",
                  strict_help="fail, before writing anything, when a listed image is missing or not an image or "
                              "the counts differ from the official ones")
    return p


def main(args: argparse.Namespace) -> dict:
    """Prepare the dataset; returns the summary (also in OUTPUT_DIR/prepare_report.json)."""
    from data_tools.prepare import prepare_dataset
    from ws_dan.common.runtime import RERUN_TO_FINISH, job_errors, setup_logging, tqdm_logging
    from ws_dan.common.tables import format_table

    setup_logging(verbose=args.verbose)
    with job_errors(args.output_dir, RERUN_TO_FINISH):
        with tqdm_logging():  # warnings printed while a bar runs do not break it
            result = prepare_dataset(args.name, args.source, args.output_dir, copy=args.copy,
                                     trainval=args.trainval, crop_bbox=args.crop_bbox, strict=args.strict,
                                     overwrite=args.overwrite, quality=args.quality, workers=args.workers,
                                     progress=args.progress)
    s = result.summary
    official = s["official"]["splits"]
    rows = [[split, n, official.get(split, "")] for split, n in s["splits"].items()]
    rows.append(["classes", s["classes"], s["official"]["classes"]])
    print(format_table(rows, ["", "images", "official"]))
    print()
    print(format_table([["hard-linked", s["linked"]], ["copied", s["copied"]],
                        ["cropped / banner removed", s["cropped"]], ["already there (resumed)", s["already_there"]],
                        ["skipped", s["skipped"]]], ["", "count"]))
    for f in result.skipped[:10]:
        print(f"  skipped {f.path}: {f.reason}")
    if s["mismatches"]:
        print(f"\nwarning: differs from the official {s['title']}: {'; '.join(s['mismatches'])}")
    print(f"\n{s['title']} written to {result.output_dir} (classes.csv, prepare_manifest.csv, prepare_report.json)")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
