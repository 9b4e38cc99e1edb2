"""The command-line flags every data tool shares, added to a script's parser in one call."""

from __future__ import annotations

import argparse


def add_job_flags(parser: argparse.ArgumentParser, workers_help: str = "processes (default: all CPU cores)",
                  strict_help: str = "stop at the first unreadable image") -> None:
    """Add the flags every data tool shares: -j/--workers, --overwrite, --strict, --progress, -v/--verbose."""
    parser.add_argument("-j", "--workers", type=int, default=None, help=workers_help)
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--strict", action="store_true", help=strict_help)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_downsample_flags(parser, default_size: int = 128):
    """downsample.py's flags (prepare_cache.py takes the same, with the training size as its default --size)."""
    parser.add_argument("--data-dir", "--dd", required=True, help="dataset (or split) folder to copy")
    parser.add_argument("--output-dir", "--od", required=True, help="new folder for the copy")
    parser.add_argument("--size", type=int, default=default_size, help="shortest side in pixels")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of resized JPEGs")
    add_job_flags(parser)
    return parser
