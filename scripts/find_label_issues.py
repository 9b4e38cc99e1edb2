"""Find training images whose label is probably wrong (confident learning on K-fold out-of-sample predictions).

    python scripts/find_label_issues.py --data-dir my_cars --save-dir runs/labels          # 4 folds, MobileNetV2
    python scripts/find_label_issues.py --data-dir my_cars --save-dir runs/labels --pretrained-path \\
        mobilenet_v2-b0353104.pth --image-size 160 -e 3 --folds 4
    python scripts/find_label_issues.py --data-dir my_cars --save-dir runs/labels --action quarantine  # reuses folds
    python scripts/find_label_issues.py --undo runs/labels/label_issues_manifest.csv          # puts them back

DATA_DIR holds train/<class>/ (test/ is not touched) or is itself a folder of class folders. Every image gets
class probabilities from a model that did not train on it: --folds K models (train.py's recipe, any -m and
--method; default a short baseline run) each train on K-1 folds and predict the remaining one. Confident learning
(Northcutt et al., JAIR 2021) then sets a per-class confidence threshold (the mean probability of each class
on its own images), counts the confident joint of given vs likely true labels, and flags --filter-by's choice of
images, ranked by the probability of their given label (lowest first).

SAVE_DIR receives label_issues.csv (path, given_label, suggested_label, p_given, p_suggested, rank),
out_of_sample_probs.npy (rows in label_issues_images.csv order), label_issues_sheet.png (the --top suspects with
both class names), label_issues_report.json and the folds (fold_k/run/ holds each model's train.py outputs).
A fold already done is not trained again, so an interrupted run resumes and a rerun with another --filter-by,
--top or --action costs only the analysis. Nothing in DATA_DIR moves unless --action quarantine: then the flagged
images go to SAVE_DIR/quarantine/<class>/ and label_issues_manifest.csv records each move first; --undo restores.
"""

from __future__ import annotations

import argparse

from data_tools.label_issues import METHODS
from data_tools.label_review import ACTIONS, training_parser
from ws_dan.common.cli_types import nonneg_int, positive_int


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Find mislabelled training images: K-fold out-of-sample probabilities + confident learning",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help, parents=[training_parser()])
    p.add_argument("--data-dir", "--dd", default=None,
                   help="dataset folder with train/<class>/, or a folder of class folders (only read)")
    p.add_argument("--save-dir", "--sd", default=None, help="folder for the folds, label_issues.csv and the sheet")
    p.add_argument("--folds", type=positive_int, default=4, help="K: models trained, each holding out 1/K")
    p.add_argument("--filter-by", choices=METHODS, default="prune_by_noise_rate",
                   help="which images confident learning flags (argmax_differs: the simple baseline)")
    p.add_argument("--top", type=nonneg_int, default=48, help="suspects shown in label_issues_sheet.png (0: none)")
    p.add_argument("--action", choices=ACTIONS, default="none",
                   help="quarantine: move the flagged images to SAVE_DIR/quarantine/<class>/ (undoable)")
    p.add_argument("--undo", default=None, metavar="MANIFEST",
                   help="move the images of a label_issues_manifest.csv back, then exit")
    p.add_argument("--overwrite", action="store_true",
                   help="SAVE_DIR holds other files or folds made with other settings: train the folds again")
    return p


def main(args: argparse.Namespace) -> dict:
    """Check the labels (or undo a quarantine); returns the summary (also in label_issues_report.json)."""
    from data_tools.label_review import find_label_issues_in_folder, train_settings, undo_label_quarantine
    from data_tools.manifest import run_undo
    from ws_dan.common.io import InputError, os_error_message
    from ws_dan.common.runtime import fail, setup_logging
    from ws_dan.training.recipe import TrainSetupError
    from ws_dan.training.trainer import TrainingError, TrainingInterrupted

    setup_logging(verbose=args.verbose)
    if args.undo:
        return run_undo(undo_label_quarantine, args.undo, args.progress,
                        not_with={"--data-dir": args.data_dir, "--save-dir": args.save_dir})
    if not args.data_dir or not args.save_dir:
        fail("--data-dir and --save-dir are required (or --undo MANIFEST)")
    if args.folds < 2:
        fail(f"--folds {args.folds}: expected at least 2 (each image must be held out by one model)")
    try:
        settings = train_settings(args, args.data_dir, args.save_dir)
        s = find_label_issues_in_folder(args.data_dir, args.save_dir, settings, folds=args.folds, seed=args.seed,
                                        method=args.filter_by, top=args.top, action=args.action,
                                        overwrite=args.overwrite, progress=args.progress)
    except (InputError, TrainSetupError, TrainingError) as e:  # InputError: also a refused write, a locked folder
        fail(str(e))
    except OSError as e:
        fail(os_error_message(e, args.save_dir))
    except TrainingInterrupted:
        print(f"interrupted; the folds finished so far are kept in {args.save_dir} (rerun the command to resume)")
        raise SystemExit(130) from None
    top1 = ", ".join(f"{v:.1f}%" for v in s["heldout_top1"].values())
    print(f"{s['flagged']} of {s['images'] - s['unreadable']} images flagged as probably mislabelled "
          f"({s['method']}; the baseline 'predicted class differs from label' flags {s['argmax_differs']}); "
          f"estimated noise rate {100 * s['estimated_noise_rate']:.1f}%; held-out top-1 per fold {top1}")
    print(f"list: {s['issues']}" + (f"; contact sheet: {s['contact_sheet']}" if s["contact_sheet"] else ""))
    if s["action"] == "quarantine":
        q = s["quarantine"]
        print(f"moved {q['moved']} image(s) to {q['quarantine_dir']}/<class>/; undo: "
              f"python scripts/find_label_issues.py --undo {q['manifest']}")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args())
