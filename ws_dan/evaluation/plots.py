"""PNG outputs a person would rather look at than read: training curves, confusion matrix, attention heatmaps.

Each plot goes to a path (written atomically) or to an open binary file (e.g. ``io.BytesIO``, so the HTML report
can embed the PNG without a temporary file).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import BinaryIO, Optional, Union

import matplotlib

matplotlib.use("Agg")  # files only; works on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ws_dan.common.io import PathLike, atomic_write  # noqa: E402

#: Where a plot goes: a file path, or a binary file object opened for writing.
PlotTarget = Union[PathLike, BinaryIO]


def _save(fig: plt.Figure, path: PlotTarget, dpi: int = 100) -> None:
    try:
        if hasattr(path, "write"):
            fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
        else:
            with atomic_write(path, "wb") as f:
                fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)  # also when saving fails: a long run must not accumulate open figures


def _column(rows: Sequence[dict], key: str) -> np.ndarray:
    values = []
    for r in rows:
        try:
            values.append(float(r.get(key, "nan")))
        except (TypeError, ValueError):
            values.append(math.nan)
    return np.array(values)


def plot_curves(rows: Sequence[dict], path: PlotTarget) -> None:
    """Loss, top-1 accuracy and learning rate per epoch, from the rows of metrics.csv."""
    epochs = _column(rows, "epoch")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, _column(rows, "train_loss"), label="train (3 views + center loss)")
    axes[0].plot(epochs, _column(rows, "val_loss"), label="validation")
    axes[0].set_title("loss")
    for key, label in [("train_raw_top1", "train raw"), ("train_crop_top1", "train crop"),
                       ("train_drop_top1", "train drop"), ("val_top1", "validation")]:
        axes[1].plot(epochs, _column(rows, key), label=label)
    axes[1].set_title("top-1 accuracy (%)")
    axes[2].plot(epochs, _column(rows, "lr"))
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    _save(fig, path)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], path: PlotTarget,
                          subset: Optional[Sequence[int]] = None, title: Optional[str] = None) -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted); counts written when small.

    ``subset``: show only these classes (rows and columns, in this order), e.g. the most confused ones of 196, so
    that their names fit; each row is still normalised by the true class's full count, so a cell reads "fraction
    of this class's images predicted as that one" whatever is left out.
    """
    cm = np.asarray(cm)
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros_like(cm, dtype=float), where=totals > 0)
    images = int(cm.sum())
    if subset is not None:
        idx = np.asarray(list(subset), dtype=int)
        cm, norm = cm[np.ix_(idx, idx)], norm[np.ix_(idx, idx)]
        class_names = [class_names[i] for i in idx]
    n = len(class_names)
    size = min(max(6.0, 0.25 * n + 3), 40.0)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), labels=class_names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels=class_names, fontsize=8)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"confusion matrix ({images} images)")
    _save(fig, path)


def attention_overlay(image: Image.Image, attention: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image with its attention map (any size, resized to the image) blended on top as a jet heatmap."""
    att = np.asarray(attention, dtype=np.float32)
    att = att - att.min()
    att = att / att.max() if att.max() > 0 else att
    heat = Image.fromarray((att * 255).astype(np.uint8)).resize(image.size, Image.BILINEAR)
    colored = (plt.get_cmap("jet")(np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(colored), alpha)


def save_attention_overlay(image: Image.Image, attention: np.ndarray, path: PlotTarget, title: str = "") -> None:
    """Side by side: the image and its attention heatmap overlay, with a title (e.g. prediction vs truth)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    axes[0].imshow(image)
    axes[1].imshow(attention_overlay(image, attention))
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def plot_method_curves(curves: dict, path: PathLike, ylabel: str = "test top-1 (%)", title: str = "") -> None:
    """One line per method: ``curves[name] = (epochs, mean, sd)`` (sequences of equal length), the mean drawn
    with a band of +- one standard deviation (over seeds), so methods compare at a glance epoch by epoch."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (epochs, mean, sd) in curves.items():
        epochs, mean, sd = (np.asarray(v, dtype=float) for v in (epochs, mean, sd))
        (line,) = ax.plot(epochs, mean, marker="o", ms=3, label=name)
        ax.fill_between(epochs, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    _save(fig, path)


def save_contact_sheet(tiles: Sequence[tuple], path: PathLike, cols: int = 6, title: str = "") -> None:
    """A grid of ``(image, attention, box, caption)`` tiles: each image with its attention heatmap blended on
    top and, when ``box`` (x0, y0, x1, y1 in the image's pixels) is given, that box drawn in white."""
    from matplotlib.patches import Rectangle

    rows = max(1, math.ceil(len(tiles) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, attention, box, caption) in zip(axes.flat, tiles):
        ax.imshow(attention_overlay(image, attention, alpha=0.45))
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.5))
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
