"""Generate the built-in synthetic fine-grained sample dataset.

Each image shows a car-like object on a cluttered background; the class is
decided only by one small badge (colour + shape) on the object.

Example::

    python scripts/make_sample_data.py --output-dir data/sample --num-classes 5
"""

from __future__ import annotations

import argparse

from data_tools.synthetic import MAX_CLASSES, MIN_CLASSES, make_sample_dataset


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write a synthetic fine-grained dataset (classes differ only by a small badge).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        add_help=add_help,
    )
    parser.add_argument("--output-dir", "--od", dest="output_dir", required=True, type=str,
                        help="destination folder (must be missing or empty unless --overwrite)")
    parser.add_argument("--num-classes", default=5, type=int,
                        help=f"number of badge classes ({MIN_CLASSES}-{MAX_CLASSES})")
    parser.add_argument("--train-per-class", default=80, type=int, help="training images per class")
    parser.add_argument("--test-per-class", default=20, type=int, help="test images per class")
    parser.add_argument("--image-size", default=112, type=int, help="side of the square images in pixels")
    parser.add_argument("--seed", default=0, type=int, help="master seed; same seed -> identical files")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace train/, test/ and boxes.csv in a non-empty output folder")
    return parser


def main(args: argparse.Namespace) -> None:
    try:
        ds = make_sample_dataset(
            args.output_dir,
            num_classes=args.num_classes,
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            image_size=args.image_size,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as exc:
        # User errors (bad range, occupied folder): a one-line message, not a traceback.
        raise SystemExit(f"make_sample_data.py: error: {exc}") from exc
    print(f"Wrote synthetic sample dataset to {ds.output_dir}")
    print(f"  classes ({len(ds.class_names)}): {', '.join(ds.class_names)}")
    print(f"  train: {ds.num_train} images in {ds.output_dir / 'train'}")
    print(f"  test:  {ds.num_test} images in {ds.output_dir / 'test'}")
    print(f"  badge boxes: {ds.boxes_csv}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
