"""Copy a dataset with every image's shortest side reduced to N pixels, for the low-resolution experiment.

    python scripts/downsample.py --data-dir my_cars/test --output-dir my_cars_lr/test --size 128

Area interpolation (PIL's BOX filter, like OpenCV's INTER_AREA), aspect ratio kept, EXIF orientation applied;
images whose shortest side is already N or less are copied unchanged. Files keep their relative path, name and
format (JPEG at --quality). OUTPUT_DIR also receives downsample_manifest.csv (path, action resized/copied/
skipped, size before and after) and downsample_report.json. Rerunning an interrupted command finishes the job.
"""

from __future__ import annotations

import argparse

from data_tools.flags import add_downsample_flags


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Low-resolution copy of a dataset (shortest side N px)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    add_downsample_flags(p, default_size=128)
    return p


def main(args: argparse.Namespace) -> dict:
    """Write the copy; returns the summary (also in OUTPUT_DIR/downsample_report.json)."""
    from data_tools.downsample import downsample_command

    return downsample_command(args, "copy")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
