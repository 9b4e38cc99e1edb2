"""Out-of-sample class probabilities for every image of a labelled set, by K-fold cross-validation through the
library's training recipe (``ws_dan.training.recipe.train_classifier``: any backbone, method and flag of train.py).

Confident learning needs, for each image, the probabilities of a model that never saw that image's label
(a model that trained on it has memorised it, wrong or not). So the images are split into K stratified folds
(scikit-learn's ``StratifiedKFold``, shuffled with the seed: every fold has each class in about the same share);
for each fold k, a model trains on the other K-1 folds and predicts fold k. Layout under ``save_dir``::

    folds.json                  the plan: settings, and each image's path, label and fold (written first)
    fold_k/data/{train,test}/<class>/...   hard links (copies across filesystems) of the images: test = fold k
    fold_k/run/                 train.py's outputs for that fold (last.pt, metrics.csv, curves.png, train.log)
    fold_k/heldout_probs.npy    (images of fold k, classes) float32, in plan order; NaN rows: unreadable images

``train_classifier`` takes a data folder, hence the hard-linked ``fold_k/data`` (removed once the fold's
probabilities are written; the links cost no space). The held-out fold doubles as the run's validation split, so
its metrics.csv shows the held-out accuracy; the probabilities come from ``last.pt``, not ``best.pt``, since
picking the epoch by the held-out (noisy) labels would let them leak into the model.

Resumable: a fold whose ``heldout_probs.npy`` exists (with the right shape) is not trained again, so an
interrupted run, or a second analysis with other confident-learning settings, costs nothing for the folds
already done. A plan written for other images, folds, seed or settings is refused unless ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ws_dan.common.io import InputError, PathLike, atomic_write, write_json
from ws_dan.common.outputs import copy_file, output_path, remove_tree

if TYPE_CHECKING:
    from ws_dan.training.recipe import TrainSettings

LOG = logging.getLogger(__name__)

PLAN_NAME = "folds.json"
PROBS_NAME = "heldout_probs.npy"
TOOL = "data_tools.out_of_sample"
#: Training settings that do not change the probabilities (or are set per fold): left out of the plan's record.
NOT_DECIDING = frozenset({"data_dir", "save_dir", "overwrite", "workers", "progress", "verbose", "device", "gpu_ids",
                          "ckpt", "prefetch_factor", "strict", "save_freq", "amp", "channels_last", "compile",
                          "dist_backend"})


@dataclass
class OutOfSample:
    """Out-of-sample probabilities (N, classes) in the order of the samples given, and how they were made."""

    probabilities: np.ndarray  # float32; a NaN row: the image could not be read by the model that held it out
    folds: np.ndarray  # (N,) the fold (1..K) that held each image out
    trained: list[int]  # folds trained by this call (the others were already done)
    heldout_top1: dict[int, float]  # per fold: top-1 (%) of its model on its held-out images, given labels


def assign_folds(labels: Sequence[int], folds: int, seed: int = 0) -> np.ndarray:
    """The fold (1..``folds``) of each image: ``StratifiedKFold(folds, shuffle=True, random_state=seed)``.

    A class with fewer images than folds is spread over as many folds as it has images (scikit-learn's warning
    about it is silenced: the caller decides whether such a class can be judged)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if folds < 2:
        raise InputError(f"--folds {folds}: expected at least 2 (each image must be held out by one model)")
    if len(labels) < folds:
        raise InputError(f"{len(labels)} image(s) cannot be split into {folds} folds; expected at least {folds}")
    out = np.zeros(len(labels), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels), 1):
            out[test] = k
    return out


def _plan(samples: Sequence[tuple[Path, int]], class_names: Sequence[str], fold_of: np.ndarray, folds: int,
          seed: int, settings: dict) -> dict:
    return {"tool": TOOL, "folds": folds, "seed": seed, "class_names": list(class_names),
            "settings": json.loads(json.dumps(settings, default=str, sort_keys=True)),
            "images": [[str(Path(p).resolve()), int(t), int(f)] for (p, t), f in zip(samples, fold_of)]}


def _plan_difference(old: dict, new: dict) -> Optional[str]:
    """What differs between two plans (None: the same), in words for the error line."""
    for key, what in [("tool", "another tool's files"), ("folds", "another number of folds"), ("seed", "another seed"),
                      ("class_names", "other classes"), ("settings", "other training settings")]:
        if old.get(key) != new.get(key):
            if key == "settings":
                keys = sorted(k for k in set(old[key]) | set(new[key]) if old[key].get(k) != new[key].get(k))
                return f"other training settings ({', '.join(keys[:5])})"
            return what
    if old.get("images") != new.get("images"):
        return f"other images ({len(old.get('images') or [])} then, {len(new['images'])} now)"
    return None


def check_plan(save_dir: PathLike, plan: dict, overwrite: bool) -> None:
    """Refuse a ``save_dir`` whose folds.json describes another run (unless ``overwrite``: then its folds go)."""
    path = Path(save_dir) / PLAN_NAME
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = _plan_difference(old, plan) if isinstance(old, dict) else "an unreadable plan"
    except (OSError, ValueError):
        diff = "an unreadable plan"
    if diff is None:
        return
    if not overwrite:
        raise InputError(f"{path}: the folds in {save_dir} were made for {diff}; choose a new --save-dir or pass "
                         f"--overwrite to train them again")
    for k in range(1, max(int(old.get("folds", 0)) if isinstance(old, dict) else 0, plan["folds"]) + 1):
        remove_tree(Path(save_dir) / f"fold_{k}")  # our own fold folders only; nothing else in save_dir
    path.unlink()


def _link_fold_data(samples: Sequence[tuple[Path, int]], class_names: Sequence[str], fold_of: np.ndarray, k: int,
                    data_dir: Path) -> None:
    """``data_dir/{train,test}/<class>/NNNNNN_<name>`` hard links: test = fold ``k``, train = the others.

    Names are numbered by plan position, so two images of a class with one file name (in sub-folders) never
    collide, and the link names say which image they are."""
    remove_tree(data_dir)  # a half-made folder of an interrupted run: rebuilt from the plan
    for n, ((path, target), fold) in enumerate(zip(samples, fold_of)):
        split = "test" if fold == k else "train"
        copy_file(path, output_path(data_dir, Path(split) / class_names[target] / f"{n:06d}_{Path(path).name}"),
                  link=True)


def _predict(ckpt: Path, paths: Sequence[Path], class_names: Sequence[str], batch_size: int, workers: int,
             device: str, progress: bool) -> np.ndarray:
    """Probabilities (len(paths), classes) of ``ckpt`` on ``paths``; the checkpoint's classes are mapped to
    ``class_names`` by name; an unreadable image gets a NaN row."""
    import torch

    from ws_dan.common.runtime import resolve_device
    from ws_dan.data.datasets import ImageDataset, SkipLog, build_transform, make_loader
    from ws_dan.evaluation.inference import predict
    from ws_dan.models.checkpoint import load_checkpoint, model_from_checkpoint

    dev = resolve_device(device)
    model = model_from_checkpoint(load_checkpoint(ckpt), dev)
    cfg = model.config
    dataset = ImageDataset([(Path(p), -1) for p in paths],
                           build_transform(cfg.load_size, cfg.mean, cfg.std, False,
                                           interpolation=getattr(cfg, "resize_interpolation", "bilinear")))
    loader = make_loader(dataset, batch_size, workers, train=False, pin_memory=dev.type == "cuda")
    with torch.inference_mode():
        result = predict(model, loader, dev, skip_log=SkipLog(), progress=progress)
    column = {name: j for j, name in enumerate(class_names)}
    cols = np.array([column[name] for name in cfg.class_names])
    out = np.full((len(paths), len(class_names)), np.nan, dtype=np.float32)
    rows = np.zeros((len(result.indices), len(class_names)), dtype=np.float32)
    rows[:, cols] = result.probabilities
    out[result.indices] = rows
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, array)


def _load_fold(path: Path, shape: tuple[int, int]) -> Optional[np.ndarray]:
    """A finished fold's probabilities, or None when missing or not of ``shape`` (then it is trained again)."""
    if not path.is_file():
        return None
    try:
        probs = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return probs if probs.shape == shape else None


def deciding_settings(settings: TrainSettings) -> dict[str, Any]:
    """The training settings that decide the probabilities (all but :data:`NOT_DECIDING`), as plain values."""
    return {k: v for k, v in sorted(settings.to_dict().items()) if k not in NOT_DECIDING}


def kfold_out_of_sample(samples: Sequence[tuple[PathLike, int]], class_names: Sequence[str], save_dir: PathLike,
                        settings: TrainSettings, folds: int = 4, seed: int = 0, overwrite: bool = False,
                        data_dirs: Sequence[PathLike] = ()) -> OutOfSample:
    """Train ``folds`` models, each on all folds but one, and return every image's held-out probabilities.

    ``samples``: ``(image path, class index into class_names)``; ``settings``: the recipe's
    (``ws_dan.training.recipe.TrainSettings``) for every fold's run, of which ``data_dir``, ``save_dir``,
    ``ckpt`` and ``overwrite`` are set per fold; its batch size, workers, device and progress serve the
    prediction too. ``data_dirs``: the user's folders no run folder may lie in. A ``save_dir`` holding folds
    made for other images, folds, seed or deciding settings (:func:`deciding_settings`) is refused unless
    ``overwrite``. See the module docstring for the layout and resumption. Raises
    :class:`~ws_dan.common.io.InputError`, and what ``train_classifier`` raises (TrainSetupError, TrainingError,
    TrainingInterrupted).
    """
    from ws_dan.training.recipe import train_classifier

    samples = [(Path(p), int(t)) for p, t in samples]
    labels = np.array([t for _, t in samples], dtype=np.int64)
    fold_of = assign_folds(labels, folds, seed)
    save_dir = Path(save_dir)
    plan = _plan(samples, class_names, fold_of, folds, seed, deciding_settings(settings))
    check_plan(save_dir, plan, overwrite)
    save_dir.mkdir(parents=True, exist_ok=True)
    write_json(save_dir / PLAN_NAME, plan)

    probs = np.full((len(samples), len(class_names)), np.nan, dtype=np.float32)
    trained, top1 = [], {}
    for k in range(1, folds + 1):
        fold_dir = save_dir / f"fold_{k}"
        held = np.flatnonzero(fold_of == k)
        done = _load_fold(fold_dir / PROBS_NAME, (len(held), len(class_names)))
        if done is None:
            LOG.info("fold %d/%d: training on %d images, holding out %d", k, folds, len(samples) - len(held),
                     len(held))
            data_dir = fold_dir / "data"
            _link_fold_data(samples, class_names, fold_of, k, data_dir)
            run = dataclasses.replace(settings, data_dir=str(data_dir), save_dir=str(fold_dir / "run"), ckpt=None,
                                      overwrite=True)  # a fold's run folder is ours: a half-done run is redone
            train_classifier(run, data_dirs=[data_dir, *data_dirs])
            done = _predict(fold_dir / "run" / "last.pt", [samples[i][0] for i in held], class_names,
                            settings.batch_size, settings.workers, settings.device, settings.progress)
            _save_npy(fold_dir / PROBS_NAME, done)
            remove_tree(data_dir)
            trained.append(k)
        else:
            LOG.info("fold %d/%d: held-out probabilities already in %s", k, folds, fold_dir / PROBS_NAME)
        probs[held] = done
        ok = np.isfinite(done).all(axis=1)
        if ok.any():
            top1[k] = round(100.0 * float((done[ok].argmax(axis=1) == labels[held][ok]).mean()), 2)
    return OutOfSample(probs, fold_of, trained, top1)
