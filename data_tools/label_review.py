"""Find the training images whose label is probably wrong, and (undoably) set them aside: the job of
``scripts/find_label_issues.py``.

The reference project found mislabelled Stanford Cars photos by hand (convertible filed as coupe, Challenger as
Charger SRT). Here the class folders of ``data_dir`` (``train/<class>/`` or ``<class>/``) are cross-validated
(:mod:`data_tools.out_of_sample`: K models through train.py's recipe, each image predicted by the one that held
it out) and confident learning (:mod:`data_tools.label_issues`) picks and ranks the suspects. ``save_dir`` then
holds, besides the folds:

* ``label_issues.csv``: the flagged images, most suspicious first: path (relative to ``data_dir``), given_label,
  suggested_label (the most probable other class), p_given, p_suggested, rank (1 = lowest p_given);
* ``out_of_sample_probs.npy``: (images, classes) float32 in the order of ``label_issues_images.csv`` (every
  image: path and given label; NaN rows for images that could not be read);
* ``label_issues_sheet.png``: the top suspects, each tile captioned with the given and the suggested class;
* ``label_issues_report.json``: the counts, the estimated noise rate, the per-fold held-out top-1, and the
  calibrated confident joint;
* with ``action="quarantine"``: the flagged images move to ``save_dir/quarantine/<class>/...`` through the shared
  undoable manifest (``data_tools.manifest``), ``label_issues_manifest.csv``; ``undo_label_quarantine`` (the
  script's ``--undo``) puts them back byte for byte.

A class with a single image cannot be judged out of sample (the model holding it out never saw the class): it
is left out with a warning. Nothing under ``data_dir`` is written or moved unless quarantine is asked for.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from data_tools.label_issues import METHODS
from data_tools.manifest import MOVE_FIELDS, quarantine_files, undo_moves
from ws_dan.common.dataset_folders import DatasetImage
from ws_dan.common.io import InputError, PathLike

if TYPE_CHECKING:
    from ws_dan.training.recipe import TrainSettings

LOG = logging.getLogger(__name__)

ISSUES_NAME = "label_issues.csv"
IMAGES_NAME = "label_issues_images.csv"
PROBS_NAME = "out_of_sample_probs.npy"
SHEET_NAME = "label_issues_sheet.png"
REPORT_NAME = "label_issues_report.json"
MANIFEST_NAME = "label_issues_manifest.csv"
QUARANTINE_NAME = "quarantine"
#: Columns of label_issues.csv.
ISSUE_FIELDS = ("path", "given_label", "suggested_label", "p_given", "p_suggested", "rank")
#: The shared quarantine manifest columns (``group`` holds the given label), plus what the finder said.
MANIFEST_FIELDS = (*MOVE_FIELDS, "suggested_label", "p_given")
ACTIONS = ("none", "quarantine")
#: The training settings of a label check, where they differ from train.py's (ws_dan.training.recipe.TrainSettings):
#: a short budget on a cheap model, at the baseline's better learning rate, decayed to 0 over the run.
TRAIN_DEFAULTS = dict(model="mobilenet_v2", method="baseline", image_size=224, epochs=4, lr=0.01,
                      lr_scheduler="cosine", save_freq=0)


def training_parser() -> argparse.ArgumentParser:
    """The training flags of the label tools (train.py's names and types; defaults :data:`TRAIN_DEFAULTS`, else
    ``TrainSettings``'), as a parent parser for their scripts. Read them with :func:`train_settings`."""
    from ws_dan.common.cli_types import nonneg_int, positive_float, positive_int
    from ws_dan.models.backbones import list_backbones
    from ws_dan.training.recipe import TrainSettings as S

    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("training (every fold's model; train.py's flags)")
    g.add_argument("-m", "--model", default=TRAIN_DEFAULTS["model"], help=f"backbone ({', '.join(list_backbones())})")
    g.add_argument("--method", choices=["baseline", "wsdan"], default=TRAIN_DEFAULTS["method"],
                   help="baseline (backbone + global pooling + linear classifier: cheap) or wsdan")
    g.add_argument("--image-size", type=positive_int, default=TRAIN_DEFAULTS["image_size"], help="square input size")
    g.add_argument("--num-attentions", type=positive_int, default=32, help="wsdan: attention maps M")
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=S.pretrained,
                   help="start from ImageNet weights (downloaded by the backbone library and cached)")
    g.add_argument("--pretrained-path", default=S.pretrained_path, help="local ImageNet weights file (offline)")
    g.add_argument("-e", "--epochs", type=positive_int, default=TRAIN_DEFAULTS["epochs"], help="epochs per fold")
    g.add_argument("-b", "--batch-size", type=positive_int, default=S.batch_size)
    g.add_argument("--lr", type=positive_float, default=TRAIN_DEFAULTS["lr"], help="initial learning rate (SGD)")
    g.add_argument("--lr-scheduler", choices=["plateau", "cosine", "step"], default=TRAIN_DEFAULTS["lr_scheduler"])
    g.add_argument("--augment", default=S.augment, help="training augmentations (train.py's --augment)")
    g.add_argument("--seed", type=int, default=S.seed, help="folds, initialisation and shuffling")
    g = p.add_argument_group("machine")
    g.add_argument("-j", "--workers", type=nonneg_int, default=S.workers, help="data loading processes")
    g.add_argument("--device", default=S.device, help="auto, cpu, cuda or cuda:N")
    g.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=S.progress, help="progress bars")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def train_settings(args: argparse.Namespace, data_dir: PathLike, save_dir: PathLike) -> TrainSettings:
    """The recipe's settings for :func:`training_parser`'s flags (``data_dir`` and ``save_dir`` are set per fold;
    those given here are placeholders)."""
    from ws_dan.training.recipe import TrainSettings

    values = {**TRAIN_DEFAULTS, **{k: v for k, v in vars(args).items() if k not in ("data_dir", "save_dir")}}
    return TrainSettings.from_namespace(argparse.Namespace(**values, data_dir=str(data_dir), save_dir=str(save_dir)))


@dataclass
class LabelledImages:
    """The images to check: their class folders' names are the given labels."""

    root: Path  # the folder of class folders (data_dir, or data_dir/train)
    images: list[DatasetImage]
    class_names: list[str]
    labels: np.ndarray  # index into class_names, per image
    left_out: dict[str, int]  # classes with too few images to judge -> their image count


def labelled_images(data_dir: PathLike) -> LabelledImages:
    """The images under ``data_dir/train/<class>/`` (when ``data_dir`` holds splits) or ``data_dir/<class>/``.

    Images outside any class folder are ignored (with a warning); classes with one image are left out (see the
    module docstring). Raises :class:`InputError` naming the folder when fewer than two classes remain."""
    from ws_dan.common.dataset_folders import scan_dataset, split_folders

    data_dir = Path(data_dir)
    root = data_dir
    if not data_dir.is_dir():
        scan_dataset(data_dir)  # raises the standard line for a missing folder or a file
    splits = {p.name.lower(): p for p in split_folders(data_dir)}
    if splits:
        if "train" not in splits:
            raise InputError(f"{data_dir}: has split folders ({', '.join(sorted(splits))}) but no train/; expected "
                             f"{data_dir}/train/<class>/ or {data_dir}/<class>/")
        root = splits["train"]
    found, skipped = scan_dataset(root, splits=False)
    if skipped:
        LOG.warning("%s: %d file(s) that are not images were skipped", root, len(skipped))
    loose = [img for img in found if not img.label]
    if loose:
        LOG.warning("%s: %d image(s) outside any class folder ignored (e.g. %s)", root, len(loose), loose[0].rel)
    counts: dict[str, int] = {}
    for img in found:
        if img.label:
            counts[img.label] = counts.get(img.label, 0) + 1
    left_out = {c: n for c, n in sorted(counts.items()) if n < 2}
    if left_out:
        LOG.warning("%d class(es) with a single image left out (no model could learn them out of sample): %s",
                    len(left_out), ", ".join(list(left_out)[:5]))
    class_names = sorted(c for c in counts if c not in left_out)
    if len(class_names) < 2:
        raise InputError(f"{root}: expected class folders with at least 2 images each, in at least 2 classes; found "
                         f"{len(class_names)} such class(es)")
    index = {c: i for i, c in enumerate(class_names)}
    images = sorted((img for img in found if img.label in index), key=lambda img: img.rel.as_posix())
    return LabelledImages(root, images, class_names, np.array([index[img.label] for img in images], np.int64),
                          left_out)


def display_path(img: DatasetImage, data_dir: PathLike) -> str:
    """The image's path relative to ``data_dir`` (as the user named it), with forward slashes."""
    return img.path.relative_to(Path(data_dir)).as_posix()


def issue_rows(paths: Sequence[str], probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
               ranked: Sequence[int]) -> list[dict[str, str]]:
    """The rows of label_issues.csv for the ``ranked`` indices (most suspicious first)."""
    from data_tools.label_issues import suggested_labels

    ranked = np.asarray(ranked, dtype=np.int64)
    suggested = suggested_labels(probs[ranked], labels[ranked])  # only these rows: others may be NaN (unreadable)
    rows = []
    for rank, (i, sugg) in enumerate(zip(ranked.tolist(), suggested.tolist()), 1):
        given = int(labels[i])
        rows.append({"path": paths[i], "given_label": class_names[given], "suggested_label": class_names[sugg],
                     "p_given": f"{probs[i, given]:.6f}", "p_suggested": f"{probs[i, sugg]:.6f}", "rank": str(rank)})
    return rows


def issue_sheet(rows: Sequence[dict[str, str]], data_dir: PathLike, path: PathLike, top: int = 48,
                columns: int = 8) -> Optional[Path]:
    """A contact sheet of the first ``top`` rows: under each image its given class, the suggested one, and the
    rank with both probabilities. None when there is nothing to show."""
    from ws_dan.common.contact_sheet import contact_sheet

    tiles = [(Path(data_dir) / r["path"], [f"given: {r['given_label']}", f"-> {r['suggested_label']}",
                                           f"#{r['rank']}  p {float(r['p_given']):.2f} -> "
                                           f"{float(r['p_suggested']):.2f}"])
             for r in list(rows)[:max(top, 0)]]
    return contact_sheet([tiles[k:k + columns] for k in range(0, len(tiles), columns)], path, thumb=160,
                         caption_lines=3, chars=27)


def check_save_dir(save_dir: PathLike, data_dir: PathLike, overwrite: bool) -> None:
    """Refuse a save folder nested with the data folder, a file, or a non-empty folder this tool did not make
    (no folds.json) unless ``overwrite``."""
    from data_tools.out_of_sample import PLAN_NAME
    from ws_dan.common.outputs import check_not_nested

    save_dir = Path(save_dir)
    check_not_nested(save_dir, [data_dir])
    if save_dir.exists() and not save_dir.is_dir():
        raise InputError(f"{save_dir}: expected a folder for the results, found a file")
    if (save_dir.is_dir() and any(save_dir.iterdir()) and not (save_dir / PLAN_NAME).is_file() and not overwrite):
        raise InputError(f"{save_dir}: the folder exists, is not empty and holds no earlier label check "
                         f"({PLAN_NAME}); choose a new folder or pass --overwrite")


def find_label_issues_in_folder(data_dir: PathLike, save_dir: PathLike, settings: TrainSettings,
                                folds: int = 4, seed: int = 0, method: str = "prune_by_noise_rate", top: int = 48,
                                action: str = "none", overwrite: bool = False,
                                progress: Any = False) -> dict[str, Any]:
    """Cross-validate the class folders of ``data_dir``, flag and rank the probable label errors, write the
    outputs listed in the module docstring to ``save_dir`` and, for ``action="quarantine"``, move the flagged
    images out. ``settings``: the recipe's for every fold (:func:`train_settings`). Returns the summary (also in
    label_issues_report.json). With ``action="quarantine"`` ``data_dir`` is locked throughout (a second run
    moving files there is refused in one line naming the holder's pid)."""
    from ws_dan.common.outputs import folder_lock

    if action not in ACTIONS:
        raise InputError(f"--action {action}: expected one of {', '.join(ACTIONS)}")
    if method not in METHODS:
        raise InputError(f"--filter-by {method}: expected one of {', '.join(METHODS)}")
    data_dir, save_dir = Path(data_dir), Path(save_dir)
    check_save_dir(save_dir, data_dir, overwrite)
    # A quarantine moves files the scan found: no other run may move files there from the scan on.
    with folder_lock([data_dir] if action == "quarantine" else [], tool="find_label_issues --action quarantine"):
        return _find_in_folder(data_dir, save_dir, settings, folds, seed, method, top, action, overwrite, progress)


def _find_in_folder(data_dir: Path, save_dir: Path, settings: TrainSettings, folds: int, seed: int, method: str,
                    top: int, action: str, overwrite: bool, progress: Any) -> dict[str, Any]:
    from data_tools.label_issues import confident_joint, estimated_noise_rate, find_label_issues, per_class_thresholds
    from data_tools.out_of_sample import kfold_out_of_sample
    from ws_dan.common.io import atomic_write, write_csv, write_json

    found = labelled_images(data_dir)
    LOG.info("%s: %d images in %d classes; %d-fold cross-validation", found.root, len(found.images),
             len(found.class_names), folds)
    oos = kfold_out_of_sample([(img.path, t) for img, t in zip(found.images, found.labels)], found.class_names,
                              save_dir, settings, folds=folds, seed=seed, overwrite=overwrite,
                              data_dirs=[data_dir])
    paths = [display_path(img, data_dir) for img in found.images]
    write_csv(save_dir / IMAGES_NAME, [{"path": p, "given_label": found.class_names[t], "fold": int(f)}
                                       for p, t, f in zip(paths, found.labels, oos.folds)],
              ["path", "given_label", "fold"])
    with atomic_write(save_dir / PROBS_NAME, "wb") as f:
        np.save(f, oos.probabilities)

    readable = np.flatnonzero(np.isfinite(oos.probabilities).all(axis=1))
    probs, labels = oos.probabilities[readable].astype(np.float64), found.labels[readable]
    ranked = readable[find_label_issues(probs, labels, method)]
    baseline = len(find_label_issues(probs, labels, "argmax_differs"))
    rows = issue_rows(paths, oos.probabilities.astype(np.float64), found.labels, found.class_names, ranked)
    write_csv(save_dir / ISSUES_NAME, rows, ISSUE_FIELDS)
    sheet = issue_sheet(rows, data_dir, save_dir / SHEET_NAME, top=top) if top > 0 else None
    if sheet is None:
        (save_dir / SHEET_NAME).unlink(missing_ok=True)  # an earlier run's sheet would show other suspects

    summary: dict[str, Any] = {
        "data_dir": str(data_dir), "images": len(found.images), "classes": len(found.class_names),
        "left_out_classes": found.left_out, "unreadable": len(found.images) - len(readable), "folds": folds,
        "seed": seed, "method": method, "flagged": len(rows), "argmax_differs": baseline,
        "estimated_noise_rate": round(estimated_noise_rate(probs, labels), 4),
        "heldout_top1": {str(k): v for k, v in oos.heldout_top1.items()}, "folds_trained": oos.trained,
        "action": action, "issues": str(save_dir / ISSUES_NAME), "probabilities": str(save_dir / PROBS_NAME),
        "contact_sheet": str(sheet) if sheet else None,
    }
    if action == "quarantine":
        summary["quarantine"] = quarantine_label_issues(found, ranked, rows, save_dir / QUARANTINE_NAME,
                                                        save_dir / MANIFEST_NAME, progress=progress)
    # A class without a readable image has no threshold (inf): None in the JSON.
    thresholds = [round(float(t), 6) if np.isfinite(t) else None for t in per_class_thresholds(probs, labels)]
    write_json(save_dir / REPORT_NAME, {**summary, "class_names": found.class_names, "thresholds": thresholds,
                                        "confident_joint": np.round(confident_joint(probs, labels), 3).tolist()})
    return summary


def quarantine_label_issues(found: LabelledImages, ranked: Sequence[int], rows: Sequence[dict[str, str]],
                            quarantine_dir: PathLike, manifest_path: PathLike, progress: Any = False) -> dict:
    """Move the flagged images to ``quarantine_dir/<class>/...`` (the shared manifest is written first; see
    ``data_tools.manifest.quarantine_files``); the images that stay are protected from being moved through a
    link. Returns its counts."""
    flagged = set(int(i) for i in ranked)
    moves = [(found.images[i].path, found.images[i].rel,
              {"group": row["given_label"], "suggested_label": row["suggested_label"], "p_given": row["p_given"]})
             for i, row in zip(ranked, rows)]
    keep = [img.path for n, img in enumerate(found.images) if n not in flagged]
    return quarantine_files(moves, [found.root], quarantine_dir, manifest_path, MANIFEST_FIELDS, keep=keep,
                            tool="find_label_issues", progress=progress)


def undo_label_quarantine(manifest_path: PathLike, progress: Any = False) -> dict:
    """Put quarantined images back (``data_tools.manifest.undo_moves``: only inside the recorded folders, content
    checked, nothing replaced)."""
    return undo_moves(manifest_path, progress=progress)
