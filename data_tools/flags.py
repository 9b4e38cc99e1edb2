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
