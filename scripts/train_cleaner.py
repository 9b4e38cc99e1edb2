"""Train the wanted/unwanted classifier that clean_images.py uses to weed out irrelevant downloads.

    python scripts/train_cleaner.py --data-dir sorted/ --save-dir runs/cleaner              # MobileNetV2, 224 px
    python scripts/train_cleaner.py --data-dir sorted/ --save-dir runs/cleaner -m timm:legacy_xception -e 20
    python scripts/clean_images.py --data-dir downloads --ckpt-path runs/cleaner/cleaner.pt --output-dir cleaned

DATA_DIR holds wanted/ (images like the ones to keep: whole cars, the right view...) and unwanted/ (what a web
search also brings: interiors, parts, adverts, logos...), a few dozen each or more; it is only read. It is split
(stratified, --seed, near-duplicates on one side) into SAVE_DIR/data/{train,test}/{wanted,unwanted}/ by hard links
(copies across filesystems), then trained with train.py's recipe (ws_dan.training.recipe.train_classifier) as the
plain CNN baseline (--method baseline) with balanced class weights, since the two folders are rarely the same size.
Every train.py flag works here (-m, --image-size, -e, -b, --lr, --pretrained-path, --augment, -c to resume...);
both scripts take them from ws_dan.training.recipe.add_train_arguments. SAVE_DIR receives train.py's outputs,
cleaner.pt (a copy of last.pt, or of best.pt with --select best) and cleaner_eval.json: precision and recall of
removing the held-out unwanted images at --threshold. A SAVE_DIR that already holds a run is refused (before the
split is written) unless -c resumes it or --overwrite replaces it.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ws_dan.common.cli_types import open_unit_float, unit_float
from ws_dan.training.recipe import TrainSettings, add_train_arguments

#: Files the cleaner writes into SAVE_DIR besides train.py's (removed with --overwrite).
CLEANER_FILES = ("cleaner.pt", "cleaner_eval.json")
#: Model settings used unless given (or taken from the checkpoint with -c, as train.py does).
MODEL_DEFAULTS = dict(method="baseline", model="mobilenet_v2", image_size=224)
#: Training flags whose default differs from train.py's.
CLEANER_DEFAULTS = dict(class_weights="balanced", epochs=15, lr_scheduler="cosine")
HELP = {
    "model": f"backbone (any of train.py's -m names); default {MODEL_DEFAULTS['model']}, or the checkpoint's with -c",
    "method": "baseline (backbone + global pooling + linear classifier) or wsdan; default baseline, or the "
              "checkpoint's with -c",
    "image_size": f"square input size; default {MODEL_DEFAULTS['image_size']}, or the checkpoint's with -c",
    "data_dir": "folder with wanted/ and unwanted/ sub-folders of sorted example images (only read)",
    "save_dir": "folder for the split (data/), checkpoints (cleaner.pt), metrics and logs",
}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The cleaner's flags, then train.py's (ws_dan.training.recipe.add_train_arguments: the same names, types and
    help, with the cleaner's own defaults)."""
    p = argparse.ArgumentParser(
        description="Train a two-class wanted/unwanted image classifier (train.py's engine, baseline method)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)

    g = p.add_argument_group("cleaner")
    g.add_argument("--test-ratio", type=open_unit_float, default=0.2,
                   help="share of each folder held out for validation")
    g.add_argument("--link", action=argparse.BooleanOptionalAction, default=True,
                   help="hard-link the images into SAVE_DIR/data (else copy)")
    g.add_argument("--threshold", type=unit_float, default=0.5,
                   help="p(unwanted) at or above which the held-out evaluation counts an image as removed")
    g.add_argument("--select", choices=["last", "best"], default="last",
                   help="the checkpoint copied to SAVE_DIR/cleaner.pt: the last epoch, or train.py's best.pt (first "
                        "epoch with the best validation top-1; small validation sets tie early)")

    add_train_arguments(p, HELP)
    p.set_defaults(**CLEANER_DEFAULTS)
    return p


def main(args: argparse.Namespace) -> dict:
    """Split, train, evaluate on the held-out images; returns the last epoch's metrics and the evaluation."""
    from ws_dan.common.outputs import copy_file
    from ws_dan.common.runtime import setup_logging

    log = setup_logging(verbose=args.verbose)
    save_dir = Path(args.save_dir)
    split_dir = save_dir / "data"
    split = _split(args, save_dir, split_dir, log)  # the sorted folder checked, split into train / test
    row = _train(args, split_dir)  # train.py's recipe on the split
    # The cleaner: a validation split of a few dozen images reaches 100% top-1 within an epoch or two, and train.py
    # keeps the *first* best epoch, so by default the end of the (cosine-decayed) schedule is used instead.
    cleaner = save_dir / "cleaner.pt"
    copy_file(save_dir / f"{args.select}.pt", cleaner)
    metrics = _held_out_check(args, cleaner, split_dir, split.summary, save_dir / "cleaner_eval.json")

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    log.info("held-out: %d images, %d unwanted; removed %d at p >= %.2f: precision %s, recall %s", metrics["images"],
             metrics["unwanted"], metrics["removed"], args.threshold, pct(metrics["precision"]),
             pct(metrics["recall"]))
    log.info("cleaner: %s; next: python scripts/clean_images.py --data-dir DOWNLOADS --ckpt-path %s --output-dir OUT",
             cleaner, cleaner)
    return {"train": row, "heldout": metrics, "checkpoint": str(cleaner), "split": split.summary}


def _split(args: argparse.Namespace, save_dir: Path, split_dir: Path, log):
    from data_tools.clean import check_sorted_folder, prepare_cleaner_split
    from ws_dan.common.io import InputError
    from ws_dan.common.run_dir import RunDirError, check_run_dir
    from ws_dan.common.runtime import fail

    try:
        check_run_dir(save_dir, [args.data_dir], resume=bool(args.ckpt), overwrite=args.overwrite,
                      extra=CLEANER_FILES)
    except RunDirError as e:
        fail(str(e))
    try:
        counts = check_sorted_folder(args.data_dir)
        log.info("%s: %d wanted, %d unwanted image(s)", args.data_dir, counts["wanted"], counts["unwanted"])
        split = prepare_cleaner_split(args.data_dir, split_dir, test_ratio=args.test_ratio, seed=args.seed,
                                      link=args.link, workers=0, progress=False)
    except InputError as e:
        fail(str(e))
    s = split.summary
    log.info("split into %s: %d train, %d test (%d near-duplicate group(s) kept together)", split_dir, s["train"],
             s["test"], s["duplicate_groups"])
    return split


def _train(args: argparse.Namespace, split_dir: Path) -> dict:
    """train.py's recipe on the split, with the cleaner's model defaults where neither a flag nor -c sets them."""
    from ws_dan.common.runtime import fail
    from ws_dan.training.recipe import TrainSetupError, train_classifier
    from ws_dan.training.trainer import TrainingError, TrainingInterrupted

    settings = TrainSettings.from_namespace(args)
    unset = {} if args.ckpt else {k: v for k, v in MODEL_DEFAULTS.items() if getattr(settings, k) is None}
    settings = dataclasses.replace(settings, data_dir=str(split_dir), **unset)
    try:
        # The split lives inside SAVE_DIR by design: the run folder is checked against the source folder instead.
        # args.json and the checkpoints record the cleaner's flags too.
        return train_classifier(settings, data_dirs=[args.data_dir], extra_files=CLEANER_FILES,
                                record={**vars(args), **settings.to_dict()})
    except (TrainSetupError, TrainingError) as e:
        fail(str(e))
    except TrainingInterrupted:
        raise SystemExit(130) from None


def _held_out_check(args: argparse.Namespace, cleaner: Path, split_dir: Path, s: dict, path: Path) -> dict:
    """What clean_images.py would do with the cleaner at --threshold on the held-out images: precision and recall
    of the removal, written to ``path``."""
    from data_tools.clean import removal_metrics, score_images
    from ws_dan.common.dataset_folders import scan_dataset
    from ws_dan.common.io import InputError, write_json
    from ws_dan.common.runtime import fail
    from ws_dan.models.checkpoint import CheckpointError

    test_images, _ = scan_dataset(split_dir / "test", splits=False)
    try:
        scores = score_images(cleaner, [img.path for img in test_images], batch_size=args.batch_size, workers=0,
                              device=args.device)
    except (InputError, CheckpointError) as e:
        fail(str(e))
    label = {img.path: img.label for img in test_images}
    removed = [p for p, q in zip(scores.paths, scores.p_unwanted) if q >= args.threshold]
    metrics = removal_metrics(removed, [p for p in scores.paths if label[p] == "unwanted"], len(scores.paths))
    metrics.update(threshold=args.threshold, checkpoint=str(cleaner), train_images=s["train"], test_images=s["test"])
    write_json(path, metrics)
    return metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
