"""Pre-resize a dataset for training: every image's shortest side = the training size, so the data loader
decodes small JPEGs instead of multi-megapixel photos every epoch.

    python scripts/prepare_cache.py --data-dir my_cars --output-dir my_cars_512 --size 512
    python scripts/train.py --data-dir my_cars_512 --save-dir runs/b3 --image-size 512

It is scripts/downsample.py with the training size as default: area interpolation, aspect ratio kept (so
random-resized crops still have the pixels they need), smaller images copied unchanged, resumable. Measured
with scripts/benchmark.py --loader: see the README.
"""

from __future__ import annotations

import argparse

from data_tools.flags import add_downsample_flags


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """scripts/downsample.py's flags with the training size as the default --size."""
    p = argparse.ArgumentParser(description="Cache a dataset pre-resized to the training size (shortest side = --size)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    add_downsample_flags(p, default_size=512)
    return p


def main(args: argparse.Namespace) -> dict:
    """Write the cache; returns the summary (also in OUTPUT_DIR/downsample_report.json)."""
    from data_tools.downsample import downsample_command

    return downsample_command(args, "cache")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
