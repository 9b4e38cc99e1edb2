"""What predict.py writes, as functions: which images, the rows of predictions.csv, metrics.json, the confusion
matrix and the attention heatmaps, and the short top-k summary printed for a handful of images.

Everything here is importable from a notebook; the script only parses flags, runs the model and calls these.

Outputs go through :class:`ws_dan.common.owned_files.OwnedOutputs`, so predict.py overwrites only files it wrote itself
(a user's own ``predictions.csv`` in the output folder stays unless ``--overwrite``), and an output folder inside
a scanned input folder is refused (its heatmaps would be predicted on the next run).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ws_dan.common.io import PathLike, atomic_write, read_csv_rows, write_csv, write_json
from ws_dan.common.owned_files import OutputError, OwnedOutputs, check_not_an_input, check_not_inside
from ws_dan.data.datasets import (
    DatasetError,
    SampleList,
    class_folder_samples,
    csv_samples,
    path_samples,
    unlabeled_samples,
)
from ws_dan.evaluation.html_report import REPORT_FILE, gallery_rows, write_report
from ws_dan.evaluation.metrics import Scores, classification_scores, rank_classes

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ws_dan.data.datasets import ImageDataset, Sample
    from ws_dan.evaluation.inference import Predictions

log = logging.getLogger(__name__)

TOOL = "ws_dan.predict"
#: Files predict.py may write in its output folder (besides ``attention/NNNN_<image>.png``).
OUTPUT_FILES = ("predictions.csv", "probabilities.npy", "metrics.json", "per_class.csv", "confusion_matrix.png",
                "predict.log")
#: Written (and checked for a user's file of that name) only when asked for: ``--report``.
OPTIONAL_FILES = (REPORT_FILE,)
ATTENTION_DIR = "attention"
#: Up to this many images, predict.py also prints each image's top-k classes.
PRINT_LIMIT = 20


@dataclass
class Inputs:
    """The images to predict, whether they carry labels, and the folder their paths are shown relative to."""

    found: SampleList
    labelled: bool
    root: Optional[Path]  # the one --data-dir folder (paths in predictions.csv are relative to it), else None
    scanned_dirs: list[Path]  # folders that were scanned: an output folder must not be inside one


def find_inputs(inputs: Sequence[PathLike], class_names: Sequence[str], labels: str = "auto",
                headings: Sequence[str] = ("image", "label")) -> Inputs:
    """The samples for ``inputs`` (image files and folders) and how they are labelled.

    ``labels``: "folder" (class folders), "none", a CSV path (columns ``headings``, paths relative to the
    folder), or "auto": class folders when the one input folder's sub-folders are all class names, else none.
    Class folders and CSV labels need exactly one input folder; image files are always unlabelled.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise DatasetError("no input given (expected image files or folders: --data-dir DIR or paths)")
    single_dir = paths[0] if len(paths) == 1 and paths[0].is_dir() else None
    mode = labels
    if mode == "auto":
        subdirs = {p.name for p in single_dir.iterdir() if p.is_dir()} if single_dir else set()
        mode = "folder" if subdirs and subdirs <= set(class_names) else "none"
    if mode == "none":
        if single_dir is not None:
            return Inputs(unlabeled_samples(single_dir), False, single_dir, [single_dir])
        return Inputs(path_samples(paths), False, None, [p for p in paths if p.is_dir()])
    if single_dir is None:
        what = "class folders" if mode == "folder" else f"CSV labels ({mode})"
        given = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        if len(paths) == 1 and not paths[0].exists():
            raise DatasetError(f"{paths[0]}: does not exist (expected a folder of images)")
        raise DatasetError(f"{given}: {what} need exactly one --data-dir folder; got {len(paths)} path(s) "
                           f"(use --csv-labels-path none to predict files without labels)")
    if mode == "folder":
        return Inputs(class_folder_samples(single_dir, class_names=class_names, allow_empty_classes=True), True,
                      single_dir, [single_dir])
    headings = tuple(h.strip() for h in headings)
    if len(headings) != 2:
        raise DatasetError(f"--csv-headings expects two names like image,label; got {','.join(headings)!r}")
    return Inputs(csv_samples(single_dir, mode, class_names, headings), True, single_dir, [single_dir])


def display_path(path: PathLike, root: Optional[PathLike]) -> str:
    """``path`` relative to ``root`` when it lies under it (the folder case), else as given."""
    path = Path(path)
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def prediction_rows(images: Sequence[str], probabilities: np.ndarray, class_names: Sequence[str], topk: int,
                    targets: Optional[Sequence[int]] = None) -> list[dict[str, str]]:
    """The rows of predictions.csv, one per image, in ``probabilities`` order.

    Columns: ``image``, ``label`` (when ``targets`` is given), ``predicted``, ``confidence`` (its probability),
    then ``top{j}_class`` / ``top{j}_prob`` for j = 1..topk (capped at the class count); probabilities with 6
    decimals."""
    order = rank_classes(probabilities, topk)
    rows: list[dict[str, str]] = []
    for i, image in enumerate(images):
        rec = {"image": image}
        if targets is not None:
            rec["label"] = class_names[int(targets[i])]
        top = order[i]
        rec["predicted"] = class_names[top[0]]
        rec["confidence"] = f"{probabilities[i, top[0]]:.6f}"
        for j, c in enumerate(top, start=1):
            rec[f"top{j}_class"] = class_names[c]
            rec[f"top{j}_prob"] = f"{probabilities[i, c]:.6f}"
        rows.append(rec)
    return rows


def metrics_record(scores: Scores, num_images: int, skipped_images: int, **extra: Any) -> dict[str, Any]:
    """The content of metrics.json: counts, top-1/3/5 (%) and macro precision / recall / F1, then ``extra``
    (checkpoint, data_dir, super-resolution settings...)."""
    return {"num_images": num_images, "skipped_images": skipped_images, **scores.summary, **extra}


#: The longest image stem (UTF-8 bytes) a heatmap's name keeps whole (a file name may have 255 bytes at most).
HEATMAP_STEM_BYTES = 80


def heatmap_name(n: int, path: PathLike) -> str:
    """``attention/NNNN_<image stem>.png``: numbered, so two images with the same name do not collide.

    A stem over :data:`HEATMAP_STEM_BYTES` bytes is cut there and followed by ``~`` and 8 hex digits of its
    SHA-1, so every name fits the filesystem (with room for the writer's temporary name) however long the
    photo's name is."""
    stem = Path(path).stem
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) > HEATMAP_STEM_BYTES:
        digest = hashlib.sha1(raw).hexdigest()[:8]
        stem = raw[:HEATMAP_STEM_BYTES].decode("utf-8", "ignore") + "~" + digest
    return f"{ATTENTION_DIR}/{n:04d}_{stem}.png"


def heatmap_title(path: PathLike, row: dict[str, str]) -> str:
    """``photo.jpg: predicted (93%)``, plus ``, true: label`` when known."""
    title = f"{Path(path).name}: {row['predicted']} ({float(row['confidence']):.0%})"
    if "label" in row:
        title += f", true: {row['label']}"
    return title


def top_classes_lines(rows: Sequence[dict[str, str]]) -> list[str]:
    """One line per image for the terminal: ``photo.jpg: Audi TT 2011 0.873 | BMW M3 2012 0.051 | ...``."""
    lines = []
    for row in rows:
        tops, j = [], 1
        while f"top{j}_class" in row:
            tops.append(f"{row[f'top{j}_class']} {float(row[f'top{j}_prob']):.3f}")
            j += 1
        label = f" (true: {row['label']})" if "label" in row else ""
        lines.append(f"{row['image']}{label}: " + " | ".join(tops))
    return lines


class PredictionWriter:
    """Writes predict.py's files into ``output_dir`` and only replaces files it wrote there before.

    Create it before anything is written (it checks the folder), :meth:`write` the tables, :meth:`heatmap` each
    overlay, then :meth:`finish` (removes files of an earlier run that this run did not write, e.g. a labelled
    run's metrics.json when this run has no labels).
    """

    def __init__(self, output_dir: PathLike, overwrite: bool = False, inputs: Sequence[PathLike] = (),
                 scanned_dirs: Sequence[PathLike] = (), html: bool = False):
        """``inputs``: files that must never be written (the images and checkpoint the user named);
        ``scanned_dirs``: input folders, which neither the output folder nor its attention/ may be inside;
        ``report``: report.html will be written too (so a user's report.html there is refused before any work,
        and left alone when no report is asked for)."""
        self.dir = Path(output_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise OutputError(f"{self.dir}: is an existing file; expected a folder for the outputs (--output-dir)")
        check_not_inside(self.dir, scanned_dirs)
        check_not_inside(self.dir / ATTENTION_DIR, scanned_dirs)
        self.inputs = [Path(p) for p in inputs]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.owned = OwnedOutputs(self.dir, TOOL)
        self.owned.check(OUTPUT_FILES + (OPTIONAL_FILES if html else ()), overwrite, sub_dirs=(ATTENTION_DIR,))
        self.written: list[str] = []

    def path(self, name: str) -> Path:
        """Claim ``name`` (recorded in the manifest before the file exists) and return where to write it;
        OutputError if that file is one of the inputs."""
        check_not_an_input(self.dir / name, self.inputs, flag="--output-dir")
        self.written.append(name)
        return self.owned.claim(name)

    def write(self, rows: Sequence[dict[str, str]], probabilities: np.ndarray, scores: Optional[Scores] = None,
              metrics: Optional[dict[str, Any]] = None, class_names: Sequence[str] = ()) -> None:
        """predictions.csv and probabilities.npy (float32, row for row); with a report, metrics.json,
        per_class.csv and confusion_matrix.png."""
        write_csv(self.path("predictions.csv"), rows)
        with atomic_write(self.path("probabilities.npy"), "wb") as f:
            np.save(f, np.asarray(probabilities, dtype=np.float32))
        if scores is not None:
            from ws_dan.evaluation.plots import plot_confusion_matrix

            write_json(self.path("metrics.json"), metrics if metrics is not None else scores.summary)
            write_csv(self.path("per_class.csv"), scores.per_class)
            plot_confusion_matrix(scores.confusion, list(class_names), self.path("confusion_matrix.png"))

    def heatmap(self, n: int, image_path: PathLike, attention: np.ndarray, row: dict[str, str]) -> Optional[Path]:
        """``attention/NNNN_<image>.png``: the image beside its attention heatmap; None when it cannot be read."""
        from ws_dan.common.images import UnreadableImageError, open_image
        from ws_dan.evaluation.plots import save_attention_overlay

        try:
            image = open_image(image_path)
        except UnreadableImageError:
            return None
        out = self.path(heatmap_name(n, image_path))
        save_attention_overlay(image, attention, out, heatmap_title(image_path, row))
        return out

    def write_html(self, model: Any, dataset: Any, result: Any, class_names: Sequence[str], shown: Sequence[str],
                   scores: Optional[Scores] = None, metrics: Optional[dict[str, Any]] = None, **options: Any) -> Path:
        """report.html (ws_dan.evaluation.html_report): the page to look at, labelled when ``scores`` is given.
        ``model``, ``dataset`` and ``result`` are those of ws_dan.evaluation.inference.predict;
        ``shown``: each row's path as in
        predictions.csv; ``options``: device, amp_dtype, batch_size, thetas, flip (the attention maps of the
        gallery images are computed with the same test-time views as the predictions)."""
        return write_prediction_report(self.path(REPORT_FILE), model, dataset, result, class_names, shown=shown,
                                       scores=scores, metrics=metrics, **options)

    def finish(self) -> list[str]:
        """Remove what an earlier run wrote and this one did not; returns those names."""
        stale = self.owned.finish(self.written)
        if stale:
            log.info("removed %d file(s) of an earlier run: %s", len(stale), ", ".join(stale[:5]))
        return stale


# --------------------------------------------------------------------------------------------------------
# report.html from a model: what the renderer needs beyond the predictions


def attention_for(model: torch.nn.Module, samples: Sequence[Sample], transform: Any, device: torch.device,
                  amp_dtype: Optional[torch.dtype] = None, batch_size: int = 32,
                  thetas: Optional[Sequence[float]] = None, flip: bool = False) -> dict[int, np.ndarray]:
    """The mean attention map of each of a few ``samples`` (position -> map; unreadable ones are missing).

    A second pass over just the gallery's images (24 at most) rather than keeping every image's map during
    prediction: which images are the worst errors is known only at the end, and keeping all maps costs memory
    in proportion to the data set. Same model, transform and test-time views, so the maps are those of the
    prediction shown."""
    from ws_dan.data.datasets import ImageDataset, make_loader
    from ws_dan.evaluation.inference import predict

    if not samples:
        return {}
    loader = make_loader(ImageDataset(list(samples), transform), batch_size, 0, train=False)
    result = predict(model, loader, device, amp_dtype, keep_attention=len(samples), progress=False, thetas=thetas,
                     flip=flip)
    return {int(i): np.asarray(a) for i, a in result.attention}


def write_prediction_report(
    path: PathLike,
    model: torch.nn.Module,
    dataset: ImageDataset,
    result: Predictions,
    class_names: Sequence[str],
    *,
    shown: Optional[Sequence[str]] = None,
    scores: Optional[Scores] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    device: Optional[torch.device] = None,
    amp_dtype: Optional[torch.dtype] = None,
    batch_size: int = 32,
    thetas: Optional[Sequence[float]] = None,
    flip: bool = False,
    training_rows: Optional[Sequence[Mapping[str, Any]]] = None,
    title: str = "WS-DAN predictions",
) -> Path:
    """:func:`write_report` for ``result`` (ws_dan.evaluation.inference.predict over ``dataset``), with the
    attention maps of the gallery images computed by ``model``. Labelled when ``scores`` is given (predict.py passes it
    only when
    it evaluated), so ``--do-eval false`` gives the unlabelled page."""
    samples = [dataset.samples[int(i)] for i in result.indices]
    targets = result.targets if scores is not None else None
    rows = gallery_rows(result.probabilities, targets)
    if device is None:
        device = next(model.parameters()).device
    maps = attention_for(model, [samples[int(r)] for r in rows], dataset.transform, device, amp_dtype, batch_size,
                         thetas, flip)
    attention = {int(r): maps[j] for j, r in enumerate(rows) if j in maps}
    return write_report(path, result.probabilities, class_names, [p for p, _ in samples], targets, shown=shown,
                        scores=scores, metrics=metrics, attention=attention, training_rows=training_rows,
                        title=title)


def write_training_report(
    save_dir: PathLike,
    model: torch.nn.Module,
    dataset: ImageDataset,
    class_names: Sequence[str],
    *,
    device: Optional[torch.device] = None,
    amp_dtype: Optional[torch.dtype] = None,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = False,
    extra: Optional[Mapping[str, Any]] = None,
) -> Path:
    """``save_dir/report.html`` for a finished training run: ``model`` predicts the validation ``dataset`` (the
    unshuffled test split), the page gets those metrics, per-class table, confusion matrix and worst errors, and
    the curves from ``save_dir/metrics.csv``. ``extra``: more metrics-table entries (e.g. which weights).

    Call it on the main process only; it runs one more pass over ``dataset``."""
    from ws_dan.data.datasets import SkipLog, make_loader
    from ws_dan.evaluation.inference import predict

    save_dir = Path(save_dir)
    if device is None:
        device = next(model.parameters()).device
    skip_log = SkipLog()
    loader = make_loader(dataset, batch_size, workers, train=False, pin_memory=device.type == "cuda")
    result = predict(model, loader, device, amp_dtype, skip_log=skip_log, progress=progress)
    scores = None
    if len(result.targets):
        scores = classification_scores(result.targets, result.probabilities, class_names)
        metrics = metrics_record(scores, len(result.targets), len(skip_log), **dict(extra or {}))
    else:
        metrics = {"num_images": 0, "skipped_images": len(skip_log), **dict(extra or {})}
    paths = [dataset.samples[int(i)][0] for i in result.indices]
    # Paths shown relative to the folder above the class folders (test/), so each keeps its class folder.
    folders = {str(Path(p).parent) for p in paths}
    root = Path(os.path.commonpath(sorted(folders))) if folders else None
    if root is not None and len(folders) == 1:
        root = root.parent
    shown = [display_path(p, root) for p in paths]
    metrics_csv = save_dir / "metrics.csv"
    rows = read_csv_rows(metrics_csv) if metrics_csv.is_file() else None
    return write_prediction_report(save_dir / REPORT_FILE, model, dataset, result, class_names, shown=shown,
                                   scores=scores, metrics=metrics, device=device, amp_dtype=amp_dtype,
                                   batch_size=batch_size, training_rows=rows, title=f"Training run {save_dir.name}")
