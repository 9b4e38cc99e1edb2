"""How many planted label errors does confident learning find, against "predicted class differs from label"?

    python scripts/benchmark_label_issues.py --data-dir ../shared/data/cars_dev --work-dir runs/label_bench \\
        --pretrained-path ../shared/data/weights/mobilenet_v2-b0353104.pth --image-size 128 -e 3 --folds 4
    python scripts/benchmark_label_issues.py --data-dir sample --work-dir /tmp/lb -m tiny --no-pretrained \\
        --image-size 64 -e 2 --folds 2 --modes random

For each --modes entry, a hard-linked copy of DATA_DIR's training images (train/<class>/ or <class>/; only read)
goes to WORK_DIR/<mode>/data/ with --fraction of them filed under a wrong class: "random" (any other class) or
"similar" (the class a --similar-map CSV names, else the class of the same make with the closest name: see
data_tools.label_noise). find_label_issues' K-fold cross-validation then runs on the copy (WORK_DIR/<mode>/run/),
and every finder is scored on the same out-of-sample probabilities: flagged images, precision, recall and F1
against the planted flips. cleanlab (AGPL; not a dependency of this project) adds its own rows and an agreement
column where it is importable. A rerun reuses the folds already trained (same settings), so only the table costs.
"""

from __future__ import annotations

import argparse

from data_tools.label_noise import MODES
from data_tools.label_review import training_parser
from ws_dan.common.cli_types import positive_int, unit_float

#: The finders scored (data_tools.label_issues methods); the last is the simple baseline.
METHODS = ("prune_by_noise_rate", "prune_by_class", "confident_joint_offdiag", "argmax_differs")
#: cleanlab's filter_by for the same rule, for the agreement column.
CLEANLAB_NAMES = {"prune_by_noise_rate": "prune_by_noise_rate", "prune_by_class": "prune_by_class",
                  "confident_joint_offdiag": "confident_learning", "argmax_differs": "predicted_neq_given"}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Plant label flips, find them again: confident learning vs argmax",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help,
                                parents=[training_parser()])
    p.add_argument("--data-dir", "--dd", required=True, help="dataset with train/<class>/, or a folder of classes")
    p.add_argument("--work-dir", required=True, help="folder for the noisy copies and the folds")
    p.add_argument("--fraction", type=unit_float, default=0.05, help="share of the images given a wrong label")
    p.add_argument("--modes", default="random,similar", help=f"comma-separated flip kinds: {', '.join(MODES)}")
    p.add_argument("--similar-map", default=None, help="CSV class,similar: the wrong class of a 'similar' flip")
    p.add_argument("--folds", type=positive_int, default=4, help="K of the cross-validation")
    p.add_argument("--overwrite", action="store_true", help="train the folds again when their settings differ")
    return p


def cleanlab_flags(probs, labels) -> dict:
    """cleanlab's answer for each rule, as ``{name: flagged indices}``, or {} where cleanlab is not installed."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        return {}
    import numpy as np

    ok = np.flatnonzero(np.isfinite(probs).all(axis=1))
    return {f"cleanlab {name}": ok[np.flatnonzero(find_label_issues(labels[ok], probs[ok], filter_by=name,
                                                                        n_jobs=1))].tolist()
            for name in CLEANLAB_NAMES.values()}


def main(args: argparse.Namespace) -> list[dict]:
    """Run every mode; returns the table's rows (with the flagged indices)."""
    from ws_dan.common.runtime import fail, setup_logging
    from ws_dan.common.tables import format_table

    setup_logging(verbose=args.verbose)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        fail(f"--modes {args.modes}: expected a comma-separated list of {', '.join(MODES)}")
    if args.folds < 2:
        fail(f"--folds {args.folds}: expected at least 2")
    table, notes, results, have_cleanlab = [], [], [], False
    for mode in modes:
        lines, rows, note, have_cleanlab = _mode(args, mode)  # a noisy copy checked, every method scored
        table += lines
        results += rows
        notes.append(note)
    headers = ["mode", "method", "flagged", "precision %", "recall %", "F1 %"]
    print(format_table(table, headers + (["Jaccard vs cleanlab"] if have_cleanlab else [])))
    for line in notes:
        print(line)
    if not have_cleanlab:
        print("(cleanlab is not importable here: its rows and the agreement column are left out)")
    return results


def _mode(args: argparse.Namespace, mode: str) -> tuple[list[list], list[dict], str, bool]:
    """One noise mode: a copy of the data with a share of its labels flipped that way, the label check on it, and
    each method's flags scored against the flips. Returns the table lines, the result rows, a note on the copy
    and whether cleanlab's rows are there."""
    from pathlib import Path

    import numpy as np

    from data_tools.label_noise import jaccard, score_methods, write_noisy_copy
    from data_tools.label_review import IMAGES_NAME, PROBS_NAME, find_label_issues_in_folder, train_settings
    from ws_dan.common.io import InputError, read_csv_rows
    from ws_dan.common.runtime import fail
    from ws_dan.training.recipe import TrainSetupError
    from ws_dan.training.trainer import TrainingError, TrainingInterrupted

    work = Path(args.work_dir) / mode
    try:
        copy = write_noisy_copy(args.data_dir, work, args.fraction, mode, seed=args.seed,
                                similar_map=args.similar_map)
        s = find_label_issues_in_folder(copy.root, work / "run", train_settings(args, copy.root, work / "run"),
                                        folds=args.folds, seed=args.seed, top=48, overwrite=args.overwrite,
                                        progress=args.progress)
    except (InputError, TrainSetupError, TrainingError) as e:
        fail(str(e))
    except TrainingInterrupted:
        raise SystemExit(130) from None
    probs = np.load(work / "run" / PROBS_NAME).astype(np.float64)
    images = read_csv_rows(work / "run" / IMAGES_NAME)
    names = sorted({r["given_label"] for r in images})
    labels = np.array([names.index(r["given_label"]) for r in images], dtype=np.int64)
    paths = [r["path"] for r in images]
    extra = cleanlab_flags(probs, labels)
    rows = score_methods(probs, labels, paths, copy.flips, METHODS, extra)
    by_name = {r["method"]: r for r in rows}
    table = []
    for r in rows:
        twin = by_name.get(f"cleanlab {CLEANLAB_NAMES.get(r['method'], '')}")
        line = [mode, r["method"], r["flagged"], round(100 * r["precision"], 1), round(100 * r["recall"], 1),
                round(100 * r["f1"], 1)]
        if extra:
            line.append(round(jaccard(r["indices"], twin["indices"]), 3) if twin else "")
        table.append(line)
    note = (f"{mode}: {len(copy.flips)} of {copy.images} labels flipped; held-out top-1 per fold "
            f"{', '.join(f'{v:.1f}%' for v in s['heldout_top1'].values())}; estimated noise rate "
            f"{100 * s['estimated_noise_rate']:.1f}%")
    return table, [{"mode": mode, **r} for r in rows], note, bool(extra)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
