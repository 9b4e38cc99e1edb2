"""Remove irrelevant downloads (interiors, parts, adverts...) with a two-class wanted/unwanted classifier.

The reference project trained a CNN on a few hand-sorted folders and ran it over the images a web search brought
in. Here:

* :func:`prepare_cleaner_split` turns a folder with ``wanted/`` and ``unwanted/`` into the ``train/`` + ``test/``
  layout the training engine expects (``data_tools.split``: stratified, seeded, near-duplicates kept on one side,
  hard links or copies; the sorted folder is only read). ``scripts/train_cleaner.py`` then trains the baseline
  classifier on it with balanced class weights (the two folders are rarely the same size).
* :func:`clean_images` scores every image of a downloads folder (``NEW/<class>/...``) with that checkpoint and
  writes ``clean_scores.csv`` (path, class, p_unwanted, decision), a contact sheet of the images it would remove,
  and a report; with ``action="quarantine"`` it moves them to ``<quarantine>/<class>/unwanted/`` with an undo
  manifest written by the shared ``data_tools.manifest`` (dedupe's format plus the score), so
  ``clean_images.py --undo`` puts them back byte for byte, acting only inside the recorded folders. A symlinked
  download moves as the link; its target is never touched.

The quarantine folder is outside the downloads folder on purpose: an ``unwanted/`` folder inside ``NEW/<class>/``
would still belong to that class for ``merge_data`` (images deeper in a class folder count as the class).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from data_tools.manifest import MOVE_FIELDS, quarantine_files, undo_moves
from data_tools.parallel import Progress
from ws_dan.common.dataset_folders import DatasetImage, scan_dataset
from ws_dan.common.images import SkippedFile
from ws_dan.common.io import InputError
from ws_dan.common.outputs import check_not_nested, finish_output_dir, folder_lock, prepare_output_dir

LOG = logging.getLogger(__name__)

WANTED, UNWANTED = "wanted", "unwanted"
CLEANER_CLASSES = (UNWANTED, WANTED)  # sorted, as the training engine orders class folders
ACTIONS = ("report", "quarantine")
DEFAULT_THRESHOLD = 0.5
SCORE_FIELDS = ("path", "class", "p_unwanted", "decision")
#: The shared quarantine manifest columns (data_tools.manifest), plus the score.
MANIFEST_FIELDS = (*MOVE_FIELDS, "p_unwanted")
SCORES_NAME = "clean_scores.csv"
SHEET_NAME = "contact_sheet.png"
REPORT_NAME = "clean_report.json"
MANIFEST_NAME = "quarantine_manifest.csv"


# ---------------------------------------------------------------------------------------------------------------
# Training data


def check_sorted_folder(data_dir) -> dict[str, int]:
    """Check that ``data_dir`` holds ``wanted/`` and ``unwanted/`` with at least 2 images each; their counts.

    Raises :class:`InputError` naming the folder and what was expected.
    """
    from ws_dan.common.images import find_images

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: expected a folder holding wanted/ and unwanted/ image folders, found "
                            f"{'nothing (the path does not exist)' if not data_dir.exists() else 'a file'}")
    others = sorted(p.name for p in data_dir.iterdir()
                    if p.is_dir() and not p.name.startswith(".") and p.name not in CLEANER_CLASSES)
    if others:
        raise InputError(f"{data_dir}: expected only wanted/ and unwanted/ sub-folders; also found "
                            f"{', '.join(others[:5])} (move them elsewhere)")
    counts = {}
    for name in CLEANER_CLASSES:
        folder = data_dir / name
        if not folder.is_dir():
            raise InputError(f"{data_dir}: has no {name}/ folder (expected {data_dir}/wanted/ with images to keep "
                                f"and {data_dir}/unwanted/ with images to remove)")
        counts[name] = len(find_images(folder)[0])
        if counts[name] < 2:
            raise InputError(f"{folder}: {counts[name]} image(s); at least 2 are needed (one to train on, one to "
                                f"check the classifier with), a few dozen to be useful")
    return counts


def prepare_cleaner_split(data_dir, split_dir, test_ratio: float = 0.2, seed: int = 0, link: bool = True,
                          workers: Optional[int] = None, progress: Progress = False):
    """Write ``split_dir/train/{wanted,unwanted}`` and ``split_dir/test/...`` from ``data_dir`` (only read).

    A split this function wrote before (``split_report.json`` present) is replaced; any other non-empty folder is
    refused. Near-duplicates stay on one side, so the held-out score is honest. Returns data_tools.split's result.
    """
    from data_tools.split import split_dataset

    check_sorted_folder(data_dir)
    split_dir = Path(split_dir)
    ours = (split_dir / "split_report.json").is_file()
    return split_dataset([data_dir], split_dir, test_ratio=test_ratio, seed=seed, link=link, group_duplicates=True,
                         workers=workers, progress=progress, overwrite=ours)


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def unwanted_index(class_names: Sequence[str], source="checkpoint") -> int:
    """Index of the ``unwanted`` class; raises InputError unless the classes are exactly wanted and unwanted."""
    if sorted(class_names) != sorted(CLEANER_CLASSES):
        raise InputError(f"{source}: not a cleaner checkpoint (expected the classes 'unwanted' and 'wanted', "
                            f"found {list(class_names)[:6]}); train one with scripts/train_cleaner.py")
    return list(class_names).index(UNWANTED)


def check_cleaner_checkpoint(ckpt_path) -> list[str]:
    """The class names of a readable cleaner checkpoint; raises CheckpointError / InputError otherwise."""
    from ws_dan.models.checkpoint import load_checkpoint

    names = list(load_checkpoint(ckpt_path)["config"].get("class_names") or [])
    unwanted_index(names, ckpt_path)
    return names


@dataclass
class Scores:
    """p(unwanted) of every readable image; ``skipped`` lists the files that could not be scored and why."""

    paths: list[Path]
    p_unwanted: np.ndarray
    skipped: list[SkippedFile]
    seconds: float


def score_images(ckpt_path, paths: Sequence[Path], batch_size: int = 32, workers: int = 0, device: str = "auto",
                 progress: bool = False) -> Scores:
    """Score ``paths`` with a cleaner checkpoint (see :func:`unwanted_index`) on ``device``.

    Unreadable images are skipped and listed, never fatal. Raises InputError for a checkpoint that is not a
    cleaner's, ws_dan.models.checkpoint.CheckpointError for an unreadable one.
    """
    import torch

    from ws_dan.common.runtime import resolve_device
    from ws_dan.data.datasets import ImageDataset, SkipLog, build_transform, make_loader
    from ws_dan.evaluation.inference import predict
    from ws_dan.models.checkpoint import load_checkpoint, model_from_checkpoint

    start = time.perf_counter()
    state = load_checkpoint(ckpt_path)
    dev = resolve_device(device)
    model = model_from_checkpoint(state, dev)
    config = model.config
    column = unwanted_index(config.class_names, ckpt_path)
    paths = list(paths)
    if not paths:
        return Scores([], np.zeros(0, np.float32), [], 0.0)
    dataset = ImageDataset([(Path(p), -1) for p in paths],
                           build_transform(config.load_size, config.mean, config.std, False))
    loader = make_loader(dataset, batch_size, workers, train=False, pin_memory=dev.type == "cuda")
    skip_log = SkipLog()
    with torch.inference_mode():
        result = predict(model, loader, dev, skip_log=skip_log, progress=progress)
    scored = [Path(paths[i]) for i in result.indices]
    skipped = [SkippedFile(Path(p), r) for p, r in skip_log.items.items()]
    return Scores(scored, result.probabilities[:, column].astype(np.float32), skipped, time.perf_counter() - start)


def removal_metrics(removed: Sequence, unwanted: Sequence, total: int) -> dict:
    """Precision and recall of a removal against the truly unwanted items (any hashable ids), and the counts."""
    removed, unwanted = set(removed), set(unwanted)
    tp = len(removed & unwanted)
    return {"images": total, "unwanted": len(unwanted), "removed": len(removed), "correctly_removed": tp,
            "wrongly_removed": len(removed) - tp, "missed": len(unwanted) - tp,
            "precision": round(tp / len(removed), 4) if removed else None,
            "recall": round(tp / len(unwanted), 4) if unwanted else None}


# ---------------------------------------------------------------------------------------------------------------
# Outputs


def image_contact_sheet(entries: Sequence[tuple[Path, str]], path, columns: int = 8, thumb: int = 112,
                        max_images: int = 64) -> Optional[Path]:
    """A PNG grid of images with a caption under each (the first ``max_images``); None when there is none.

    ``ws_dan.common.contact_sheet`` draws it; a caption holds up to two lines. Images that fail to open show as
    grey tiles.
    """
    from ws_dan.common.contact_sheet import contact_sheet

    entries = list(entries)[:max_images]
    tiles = [(p, caption.split("\n")) for p, caption in entries]
    return contact_sheet([tiles[k:k + columns] for k in range(0, len(tiles), columns)], path, thumb=thumb,
                         caption_lines=2, chars=19)


def _quarantine_rel(img: DatasetImage) -> Path:
    # NEW/<class>/sub/x.jpg -> <class>/unwanted/sub/x.jpg; an image outside any class folder -> unwanted/x.jpg
    if not img.label:
        return Path(UNWANTED) / img.rel
    return Path(img.label) / UNWANTED / img.rel.relative_to(img.label)


def quarantine_images(plan: Sequence[tuple[DatasetImage, float]], quarantine_dir, manifest_path,
                      progress: Progress = False, data_dir=None, keep: Sequence = ()) -> dict:
    """Move each planned image to ``quarantine_dir/<class>/unwanted/``; the undo manifest is written first.

    The shared contract of ``data_tools.manifest.quarantine_files``: the manifest (absolute paths, SHA-256, size,
    link text) and the folders undo may act in (``data_dir``, default each image's root, and the quarantine
    folder) exist before the first move; rows of an earlier run are kept; nothing is ever replaced; a symlink
    moves as the link, and a file that an image of ``keep`` links to stays; :func:`undo_clean` restores every
    file.
    """
    moves = [(img.path, _quarantine_rel(img), {"group": img.label, "p_unwanted": f"{p:.6f}"}) for img, p in plan]
    roots = [data_dir] if data_dir is not None else sorted({str(img.root) for img, _ in plan})
    return quarantine_files(moves, roots, quarantine_dir, manifest_path, MANIFEST_FIELDS, keep=keep,
                            tool="clean_images", progress=progress)


def undo_clean(manifest_path, progress: Progress = False) -> dict:
    """Move quarantined images back (``data_tools.manifest.undo_moves``: only inside the recorded folders,
    content checked, nothing replaced)."""
    return undo_moves(manifest_path, progress=progress)


def clean_images(data_dir, ckpt_path, output_dir, threshold: float = DEFAULT_THRESHOLD, action: str = "report",
                 quarantine_dir=None, batch_size: int = 32, workers: int = 0, device: str = "auto",
                 contact_max: int = 64, progress: Progress = False, overwrite: bool = False) -> dict:
    """Score the images under ``data_dir`` (``<class>/...``) and report, or quarantine, those with
    ``p_unwanted >= threshold``.

    ``output_dir`` (new or empty, outside ``data_dir``) receives clean_scores.csv (sorted by p_unwanted,
    highest first), contact_sheet.png (the images to remove), clean_report.json and, for ``quarantine``,
    quarantine_manifest.csv; the images move to ``quarantine_dir`` (default ``output_dir/quarantine``) under
    ``<class>/unwanted/``; ``data_dir`` is locked from the scan on (a second quarantine of it is refused in
    one line naming the holder's pid). Returns the summary.
    """
    if action not in ACTIONS:
        raise InputError(f"--action {action}: expected one of {', '.join(ACTIONS)}")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold {threshold}: expected a probability between 0 and 1")
    data_dir, out = Path(data_dir), Path(output_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: expected a folder of downloaded images in class folders, found "
                            f"{'nothing (the path does not exist)' if not data_dir.exists() else 'a file'}")
    if not Path(ckpt_path).is_file():
        raise InputError(f"{ckpt_path}: checkpoint file not found (expected the cleaner.pt of train_cleaner.py)")
    check_cleaner_checkpoint(ckpt_path)  # before any output folder is made
    qdir = Path(quarantine_dir) if quarantine_dir is not None else out / "quarantine"
    if action == "quarantine":
        check_not_nested(qdir, [data_dir])
    settings = {"data_dir": str(data_dir.resolve()), "ckpt": str(Path(ckpt_path).resolve()), "threshold": threshold,
                "action": action, "quarantine_dir": str(qdir.resolve())}
    # A quarantine moves files the scan found: no other run may move files there from the scan on.
    with folder_lock([data_dir] if action == "quarantine" else [], tool="clean_images --action quarantine"):
        return _clean(data_dir, ckpt_path, out, qdir, settings, threshold, action, batch_size, workers, device,
                      contact_max, progress, overwrite)


def _clean(data_dir: Path, ckpt_path, out: Path, qdir: Path, settings: dict, threshold: float, action: str,
           batch_size: int, workers: int, device: str, contact_max: int, progress: Progress,
           overwrite: bool) -> dict:
    from ws_dan.common.io import write_csv, write_json

    prepare_output_dir(out, [data_dir], overwrite=overwrite, tool="clean_images", settings=settings)

    images, skipped = scan_dataset(data_dir, splits=False)
    # Non-images beside the class folders are the downloader's reports (download_manifest.csv...), not data.
    skipped = [f for f in skipped if Path(f.path).parent != data_dir]
    if not images:
        raise InputError(f"{data_dir}: no images found (expected {data_dir}/<class>/<images>)")
    scores = score_images(ckpt_path, [img.path for img in images], batch_size=batch_size, workers=workers,
                          device=device, progress=bool(progress))
    by_path = {img.path: img for img in images}
    scored = sorted(zip(scores.paths, scores.p_unwanted.tolist()), key=lambda t: (-t[1], str(t[0])))
    remove = [(by_path[p], s) for p, s in scored if s >= threshold]
    removing = {img.path for img, _ in remove}
    rows = [{"path": by_path[p].rel.as_posix(), "class": by_path[p].label, "p_unwanted": f"{s:.6f}",
             "decision": "remove" if s >= threshold else "keep"} for p, s in scored]
    rows += [{"path": _rel(f.path, data_dir), "class": "", "p_unwanted": "", "decision": f"unreadable: {f.reason}"}
             for f in list(skipped) + scores.skipped]
    write_csv(out / SCORES_NAME, rows, SCORE_FIELDS)
    sheet = None
    if contact_max > 0:
        sheet = image_contact_sheet([(img.path, f"{img.label or '-'}\np={s:.3f} {img.path.name}") for img, s in remove],
                                    out / SHEET_NAME, max_images=contact_max)
    per_class: dict[str, dict] = {}
    for p, s in scored:
        c = per_class.setdefault(by_path[p].label, {"images": 0, "remove": 0})
        c["images"] += 1
        c["remove"] += int(s >= threshold)
    summary = {"data_dir": str(data_dir), "checkpoint": str(ckpt_path), "threshold": threshold, "action": action,
               "images": len(scored), "unreadable": len(skipped) + len(scores.skipped), "to_remove": len(remove),
               "kept": len(scored) - len(remove), "per_class": dict(sorted(per_class.items())),
               "seconds": round(scores.seconds, 2), "scores": str(out / SCORES_NAME),
               "contact_sheet": str(sheet) if sheet else None, "output_dir": str(out)}
    if action == "quarantine":
        summary["quarantine"] = quarantine_images(remove, qdir, out / MANIFEST_NAME, progress=progress,
                                                  data_dir=data_dir, keep=[img.path for img in images
                                                                           if img.path not in removing])
    write_json(out / REPORT_NAME, summary)
    finish_output_dir(out)
    return summary


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)
