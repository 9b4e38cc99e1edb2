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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import downsample  # noqa: E402


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = downsample.get_args_parser(add_help)
    parser.description = "Cache a dataset pre-resized to the training size (shortest side = --size)"
    parser.set_defaults(size=512)
    return parser


main = downsample.main

if __name__ == "__main__":
    main(get_args_parser().parse_args())
