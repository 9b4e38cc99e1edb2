"""Dataset statistics per split and class: counts, image sizes, small images, formats; two PNG charts.

Sizes come from the file headers (:func:`~ws_dan.common.images.read_image_info`, EXIF orientation applied), so a
dataset of 16,000 photos is measured in seconds; run validate_images.py to decode every file. "Small" means an
area under ``area_threshold`` pixels (default 128 x 256 = 32,768), the size under which the reference project
super-resolved an image before classifying it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np

from data_tools.parallel import Progress, parallel_map
from ws_dan.common.dataset_folders import scan_dataset
from ws_dan.common.images import DEFAULT_MAX_PIXELS, SkippedFile, UnreadableImageError, read_image_info
from ws_dan.common.io import InputError
from ws_dan.common.outputs import finish_output_dir, prepare_output_dir

LOG = logging.getLogger(__name__)

DEFAULT_AREA_THRESHOLD = 128 * 256
PERCENTILES = (5, 25, 50, 75, 95)
CLASS_FIELDS = ("split", "class", "images", "small", "small_fraction",
                *[f"{q}_{s}" for q in ("width", "height", "area") for s in ("mean", "min", "p5", "p25", "median",
                                                                               "p75", "p95", "max")],
                "formats")


@dataclass(frozen=True)
class ImageRecord:
    """One image's place in the dataset and its header facts."""

    path: Path
    split: str
    label: str
    width: int
    height: int
    format: str

    @property
    def area(self) -> int:
        return self.width * self.height


def _info_worker(path: Path, max_pixels: int):
    # Worker: header facts, or the reason the header cannot be read.
    try:
        return read_image_info(path, max_pixels)
    except UnreadableImageError as e:
        return SkippedFile(Path(path), e.reason)


def describe(values: Sequence[float]) -> dict:
    """mean, min, p5, p25, median, p75, p95, max of ``values`` (NaN for an empty list)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {k: float("nan") for k in ("mean", "min", "p5", "p25", "median", "p75", "p95", "max")}
    p5, p25, p50, p75, p95 = np.percentile(v, PERCENTILES)
    return {"mean": round(float(v.mean()), 1), "min": float(v.min()), "p5": float(p5), "p25": float(p25),
            "median": float(p50), "p75": float(p75), "p95": float(p95), "max": float(v.max())}


def summarise(records: Sequence[ImageRecord], area_threshold: int = DEFAULT_AREA_THRESHOLD) -> dict:
    """Count, size distributions, small images and formats of a list of records."""
    w = [r.width for r in records]
    h = [r.height for r in records]
    a = [r.area for r in records]
    small = sum(x < area_threshold for x in a)
    formats: dict[str, int] = {}
    for r in records:
        formats[r.format] = formats.get(r.format, 0) + 1
    return {"images": len(records), "small": small,
            "small_fraction": round(small / len(records), 4) if records else 0.0,
            "width": describe(w), "height": describe(h), "area": describe(a), "formats": dict(sorted(formats.items()))}


def _flat_row(split: str, label: str, s: dict) -> dict:
    row = {"split": split, "class": label, "images": s["images"], "small": s["small"],
           "small_fraction": s["small_fraction"]}
    for q in ("width", "height", "area"):
        for k, v in s[q].items():
            row[f"{q}_{k}"] = v
    row["formats"] = " ".join(f"{k}:{v}" for k, v in s["formats"].items())
    return row


def collect_records(data_dir, workers: Optional[int] = None, progress: Progress = False, strict: bool = False,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[ImageRecord], list[SkippedFile]]:
    """Header facts of every image under ``data_dir`` (layouts as
    :func:`~ws_dan.common.dataset_folders.scan_dataset`)."""
    images, skipped = scan_dataset(data_dir)
    if not images:
        raise InputError(f"{data_dir}: expected images (in <split>/<class>/ or <class>/ folders), found none")
    records = []
    for img, info in zip(images, parallel_map(partial(_info_worker, max_pixels=max_pixels),
                                              [i.path for i in images], workers=workers, progress=progress,
                                              desc="reading headers")):
        if isinstance(info, SkippedFile):
            if strict:
                raise UnreadableImageError(info.path, info.reason)
            skipped.append(info)
            continue
        records.append(ImageRecord(img.path, img.split or "all", img.label, info.width, info.height, info.format))
    return records, skipped


def dataset_stats(data_dir, output_dir, area_threshold: int = DEFAULT_AREA_THRESHOLD, workers: Optional[int] = None,
                  progress: Progress = False, strict: bool = False, overwrite: bool = False) -> dict:
    """Measure ``data_dir`` and write to ``output_dir``: ``stats_per_class.csv`` (one row per split and class,
    plus a row per split with class ``*``), ``image_sizes.csv`` (one row per image), ``stats.json``,
    ``size_histogram.png`` and ``class_balance.png``. Returns the content of stats.json."""
    from ws_dan.common.io import write_csv, write_json

    if area_threshold <= 0:
        raise InputError(f"--area-threshold {area_threshold}: expected a positive number of pixels")
    data_dir, out = Path(data_dir), Path(output_dir)
    records, skipped = collect_records(data_dir, workers, progress, strict)
    prepare_output_dir(out, [data_dir], overwrite=overwrite, tool="dataset_stats",
                       settings={"data_dir": str(data_dir.resolve()), "area_threshold": area_threshold})
    splits = sorted({r.split for r in records})
    per_class_rows, per_split = [], {}
    for split in splits:
        in_split = [r for r in records if r.split == split]
        per_split[split] = summarise(in_split, area_threshold)
        per_split[split]["classes"] = len({r.label for r in in_split})
        for label in sorted({r.label for r in in_split}):
            per_class_rows.append(_flat_row(split, label, summarise([r for r in in_split if r.label == label],
                                                                     area_threshold)))
        per_class_rows.append(_flat_row(split, "*", per_split[split]))
    write_csv(out / "stats_per_class.csv", per_class_rows, CLASS_FIELDS)
    write_csv(out / "image_sizes.csv", [{"path": r.path.relative_to(data_dir).as_posix(), "split": r.split,
                                         "class": r.label, "width": r.width, "height": r.height, "area": r.area,
                                         "format": r.format} for r in records],
              ["path", "split", "class", "width", "height", "area", "format"])
    counts = {split: {row["class"]: row["images"] for row in per_class_rows
                      if row["split"] == split and row["class"] != "*"}
              for split in splits}
    imbalance = {}
    for split, c in counts.items():
        values = list(c.values())
        imbalance[split] = {"min_per_class": min(values), "max_per_class": max(values),
                            "max_over_min": round(max(values) / max(min(values), 1), 2)}
    result = {"data_dir": str(data_dir), "area_threshold": area_threshold,
              "overall": summarise(records, area_threshold),
              "splits": per_split, "class_balance": imbalance, "skipped": len(skipped),
              "skipped_files": [{"path": str(s.path), "reason": s.reason} for s in skipped]}
    from data_tools.attribution import read_license_counts  # ATTRIBUTION.csv written by merge_data.py

    result["images_per_license"] = read_license_counts(data_dir)
    plot_size_histogram(records, out / "size_histogram.png", area_threshold)
    plot_class_balance(counts, out / "class_balance.png")
    write_json(out / "stats.json", result)
    finish_output_dir(out)
    return result


def plot_size_histogram(records: Sequence[ImageRecord], path, area_threshold: int = DEFAULT_AREA_THRESHOLD) -> None:
    """Histograms of width, height and area (log scale) per split, the area threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ws_dan.common.io import atomic_write

    splits = sorted({r.split for r in records})
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, key, title in zip(axes, ("width", "height", "area"), ("width (px)", "height (px)", "area (px, log)")):
        values = {s: np.array([getattr(r, key) for r in records if r.split == s], dtype=float) for s in splits}
        everything = np.concatenate(list(values.values()))
        if key == "area":
            bins = np.logspace(np.log10(max(everything.min(), 1)), np.log10(everything.max() + 1), 40)
            ax.set_xscale("log")
            ax.axvline(area_threshold, color="red", linestyle="--",
                       label=f"{area_threshold} px ({sum(everything < area_threshold)} below)")
        else:
            bins = np.linspace(everything.min(), everything.max() + 1, 40)
        for s in splits:
            ax.hist(values[s], bins=bins, alpha=0.6, label=f"{s} ({len(values[s])})")
        ax.set_title(title)
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
    fig.suptitle(f"image sizes: {len(records)} images")
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_class_balance(counts: dict, path) -> None:
    """Bar chart of images per class, one stacked colour per split (classes sorted by total)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ws_dan.common.io import atomic_write

    classes = sorted({c for per in counts.values() for c in per},
                     key=lambda c: (-sum(per.get(c, 0) for per in counts.values()), c))
    height = max(3.0, min(0.18 * len(classes) + 1.5, 40.0))
    fig, ax = plt.subplots(figsize=(10, height))
    left = np.zeros(len(classes))
    for split, per in sorted(counts.items()):
        values = np.array([per.get(c, 0) for c in classes], dtype=float)
        ax.barh(np.arange(len(classes)), values, left=left, label=split)
        left += values
    ax.set_yticks(np.arange(len(classes)))
    ax.set_yticklabels(classes, fontsize=7 if len(classes) > 40 else 9)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title(f"class balance: {len(classes)} classes")
    ax.legend(loc="lower right")
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
