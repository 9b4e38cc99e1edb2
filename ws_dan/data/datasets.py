"""Datasets and transforms shared by training and prediction.

Three ways to label images: one folder per class (``root/<class>/*.jpg``), a CSV file (``image,label``
columns), or none (a folder of images to predict). All three give a list of ``(path, class_index)`` samples
(-1 when unlabelled) wrapped by :class:`ImageDataset`.

Bad files never crash a long job: files that are not images are found while scanning (by content, see
``ws_dan.common.images``) and files that fail to decode are returned by the dataset as :class:`FailedSample`;
:func:`collate_skip_failed` drops them from the batch and hands their paths to the caller, which counts them
and warns at the end. With ``strict=True`` the first bad file raises instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.dataloader import default_collate
from torchvision import transforms as T

from ws_dan.common.images import SkippedFile, UnreadableImageError, find_images, open_image, sniff_format
from ws_dan.common.io import PathLike
from ws_dan.data.augment import DEFAULT_AUGMENT, build_train_transform

log = logging.getLogger(__name__)

Sample = tuple[Path, int]


class DatasetError(ValueError):
    """A dataset folder or label file that does not have the expected layout or content."""


# --------------------------------------------------------------------------------------------------------
# Finding samples


@dataclass
class SampleList:
    """Samples found under a folder or in a CSV, the class names they index, and the files skipped."""

    samples: list[Sample]
    class_names: list[str]
    skipped: list[SkippedFile]


def _require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DatasetError(f"{path}: does not exist (expected {what})")
    if not path.is_dir():
        raise DatasetError(f"{path}: is not a folder (expected {what})")


def class_folder_samples(
    root: PathLike, class_names: Optional[Sequence[str]] = None, allow_empty_classes: bool = False
) -> SampleList:
    """Samples from ``root/<class>/...`` (images may sit in sub-folders of a class folder).

    Without ``class_names`` the classes are the sorted sub-folder names (as torchvision's ImageFolder).
    With ``class_names`` (a training split's, or a checkpoint's) every sub-folder must be one of them; a
    class with no folder here is allowed (a small test split may lack some). An empty class folder raises
    unless ``allow_empty_classes``.
    """
    root = Path(root)
    _require_dir(root, "a folder with one sub-folder of images per class")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root}: has no class sub-folders (expected {root}/<class name>/<images>)")
    if class_names is None:
        class_names = folders
    else:
        class_names = list(class_names)
        unknown = sorted(set(folders) - set(class_names))
        if unknown:
            raise DatasetError(
                f"{root}: {len(unknown)} class folder(s) not among the {len(class_names)} known classes: "
                f"{_preview(unknown)} (known: {_preview(class_names)})"
            )
    index = {name: i for i, name in enumerate(class_names)}
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    empty: list[str] = []
    for name in folders:
        images, bad = find_images(root / name)
        skipped += bad
        if not images:
            empty.append(name)
        samples += [(p, index[name]) for p in images]
    if empty and not allow_empty_classes:
        raise DatasetError(f"{root}: class folder(s) with no readable images: {_preview(empty)}")
    return SampleList(samples, list(class_names), skipped)


def csv_samples(
    data_dir: PathLike,
    csv_path: PathLike,
    class_names: Sequence[str],
    headings: tuple[str, str] = ("image", "label"),
) -> SampleList:
    """Samples from a CSV with an image column (a path inside ``data_dir``: relative to it, or absolute) and a
    label column.

    Labels are class names (or integer indices into ``class_names``). Unknown labels raise, naming them; so do
    paths that lead outside ``data_dir`` (``../other/x.jpg``, ``/etc/passwd``, or a link inside it that points
    out): a label CSV names the photos of that folder, and must not make the tool read anything else. Listed
    files that do not exist are skipped and reported like unreadable images.
    """
    csv_path, data_dir = Path(csv_path), Path(data_dir)
    table = _read_label_table(csv_path, headings)
    image_col, label_col = headings
    index = {name: i for i, name in enumerate(class_names)}
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    unknown: dict[str, int] = {}
    outside: list[str] = []
    root = data_dir.resolve()
    seen: dict[str, tuple[int, int, str]] = {}  # normalised path -> (line, target, label) of its first row
    repeated: list[int] = []
    conflicts: list[str] = []
    for row, (image, label) in enumerate(zip(table[image_col], table[label_col]), start=2):
        label = label.strip()
        target = index.get(label)
        if target is None and label.isdigit() and int(label) < len(class_names):
            target = int(label)
        if target is None:
            key = label or f"<empty label, line {row}>"
            unknown[key] = unknown.get(key, 0) + 1
            continue
        path = Path(image) if os.path.isabs(image) else data_dir / image
        if not path.resolve().is_relative_to(root):
            outside.append(f"line {row}: {image!r}")
            continue
        # The same image twice would count twice in every metric: the same label is a harmless repeat (kept
        # once), two different labels cannot both be right (refused, naming the lines).
        key = os.path.normcase(os.path.normpath(str(path)))
        if key in seen:
            first_row, first_target, first_label = seen[key]
            if first_target == target:
                repeated.append(row)
            else:
                conflicts.append(f"{image!r} (line {first_row}: {first_label!r}, line {row}: {label!r})")
            continue
        seen[key] = (row, target, label)
        if not path.is_file():
            skipped.append(SkippedFile(path, f"listed in {csv_path.name} (line {row}) but not found"))
            continue
        samples.append((path, target))
    _refuse_bad_rows(csv_path, data_dir, len(class_names), unknown, outside, conflicts)
    if repeated:
        log.warning("%s: %d duplicate row(s) (same image, same label) counted once: line(s) %s", csv_path,
                    len(repeated), _preview([str(r) for r in repeated]).replace("'", ""))
    return SampleList(samples, list(class_names), skipped)


def _read_label_table(csv_path: Path, headings: tuple[str, str]):
    """The CSV as a table of strings with both columns present, or a DatasetError naming the file."""
    import pandas as pd

    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: label CSV not found")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DatasetError(f"{csv_path}: not a readable CSV file ({e})") from e
    missing_cols = [c for c in headings if c not in table.columns]
    if missing_cols:
        raise DatasetError(
            f"{csv_path}: missing column(s) {missing_cols}; found {list(table.columns)} "
            f"(set the names with --csv-headings IMAGE,LABEL)"
        )
    return table


def _refuse_bad_rows(csv_path: Path, data_dir: Path, num_classes: int, unknown: dict[str, int],
                     outside: list[str], conflicts: list[str]) -> None:
    """One DatasetError for the first kind of bad row found: unknown labels, paths outside the data folder,
    images listed with two labels."""
    if unknown:
        raise DatasetError(
            f"{csv_path}: {sum(unknown.values())} row(s) with label(s) not among the model's "
            f"{num_classes} classes: {_preview(sorted(unknown))}"
        )
    if outside:
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        raise DatasetError(f"{csv_path}: {len(outside)} path(s) outside the data folder {data_dir} "
                           f"({'; '.join(outside[:3])}{more}); list images inside it, relative to it")
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise DatasetError(f"{csv_path}: {len(conflicts)} image(s) listed with conflicting labels: "
                           f"{'; '.join(conflicts[:3])}{more}")


def unlabeled_samples(root: PathLike) -> SampleList:
    """Every image under ``root`` (recursively), with target -1."""
    root = Path(root)
    _require_dir(root, "a folder of images")
    images, skipped = find_images(root)
    return SampleList([(p, -1) for p in images], [], skipped)


def path_samples(inputs: Sequence[PathLike]) -> SampleList:
    """Unlabelled samples from what the user points at: image files and folders (scanned recursively), in the
    order given; a file listed twice (or also found in a listed folder) is predicted once.

    A file that is not an image (by content) is skipped and reported like any unreadable image; a path that does
    not exist raises DatasetError naming it."""
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = unlabeled_samples(path)
            skipped += found.skipped
            images = [p for p, _ in found.samples]
        elif path.is_file():
            images = [path]
            if sniff_format(path) is None:
                skipped.append(SkippedFile(path, "not an image (unrecognised file signature)"))
                images = []
        else:
            raise DatasetError(f"{path}: does not exist (expected an image file or a folder of images)")
        for p in images:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                samples.append((p, -1))
    return SampleList(samples, [], skipped)


def _preview(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(s) for s in list(items)[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


# --------------------------------------------------------------------------------------------------------
# Dataset, collate, transforms, loaders


class FailedSample(NamedTuple):
    """Returned by :class:`ImageDataset` in place of an image that could not be decoded."""

    index: int
    path: str
    reason: str


class ImageDataset(Dataset):
    """``(image_tensor, target, index)`` for each ``(path, target)`` sample; see the module docstring."""

    def __init__(self, samples: Sequence[Sample], transform: Optional[Callable] = None, strict: bool = False):
        self.samples = list(samples)
        self.transform = transform
        self.strict = strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            image = open_image(path)
        except UnreadableImageError as e:
            if self.strict:
                raise
            return FailedSample(index, str(path), e.reason)
        if self.transform is not None:
            image = self.transform(image)
        return image, target, index


class Batch(NamedTuple):
    images: Optional[torch.Tensor]  # None when every image of the batch failed to load
    targets: Optional[torch.Tensor]
    indices: Optional[torch.Tensor]
    failed: list[tuple[str, str]]  # (path, reason) of the images dropped from this batch


def collate_skip_failed(items: list) -> Batch:
    """Collate the decodable items; report the others in ``Batch.failed``."""
    good = [x for x in items if not isinstance(x, FailedSample)]
    failed = [(x.path, x.reason) for x in items if isinstance(x, FailedSample)]
    if not good:
        return Batch(None, None, None, failed)
    images, targets, indices = default_collate(good)
    return Batch(images, targets, indices, failed)


#: ``ModelConfig.resize_interpolation`` -> torchvision's mode. On PIL images both are PIL's own resize (which
#: always antialiases); "lanczos" is what the reference project's predict script used.
INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "lanczos": T.InterpolationMode.LANCZOS}


def build_transform(image_size: int, mean: Sequence[float], std: Sequence[float], train: bool,
                    augment: Sequence[str] = DEFAULT_AUGMENT, pre: Optional[Callable] = None,
                    interpolation: str = "bilinear") -> T.Compose:
    """Evaluation: the whole image resized to a square (no crop: the reference project found that keeping the
    whole car, resized to 512, beats a smaller crop) with ``interpolation`` (the checkpoint's recorded
    ``resize_interpolation``). Training: the ``augment`` list (ws_dan.data.augment); the default is a horizontal flip
    and WS-DAN.PyTorch's brightness and saturation jitter. ``pre``: a PIL -> PIL step applied first (e.g.
    super-resolution of small images)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    if train:
        transform = build_train_transform(image_size, mean, std, augment)
    else:
        transform = T.Compose([T.Resize((image_size, image_size), interpolation=INTERPOLATIONS[interpolation],
                                        antialias=True), T.ToTensor(), T.Normalize(mean, std)])
    if pre is not None:
        transform.transforms.insert(0, pre)
    return transform


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    train: bool,
    generator: Optional[torch.Generator] = None,
    pin_memory: bool = False,
    sampler: Optional[Sampler] = None,
    persistent_workers: bool = False,
    prefetch_factor: Optional[int] = None,
) -> DataLoader:
    """A DataLoader with the skip-failed collate; training shuffles with ``generator`` (or the given sampler,
    e.g. a DistributedSampler) and drops the last incomplete batch (a batch of one image breaks batch norm).

    ``persistent_workers`` keeps worker processes alive between epochs (no restart cost each epoch);
    ``prefetch_factor`` batches are prepared ahead by each worker (PyTorch's default: 2)."""
    if sampler is None:
        sampler = RandomSampler(dataset, generator=generator) if train else SequentialSampler(dataset)
    extra = {}
    if workers > 0:
        extra["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            extra["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skip_failed,
        pin_memory=pin_memory,
        drop_last=train,
        generator=generator,
        **extra,
    )


class SkipLog:
    """Counts the files skipped by a job (found at scan time or failing to decode) for the final warning."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}

    def add(self, entries) -> None:
        for entry in entries:
            path, reason = (str(entry.path), entry.reason) if isinstance(entry, SkippedFile) else entry
            self.items.setdefault(path, reason)

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, limit: int = 10) -> str:
        lines = [f"{len(self)} unreadable or non-image file(s) were skipped:"]
        lines += [f"  {p}: {r}" for p, r in list(self.items.items())[:limit]]
        if len(self) > limit:
            lines.append(f"  ... and {len(self) - limit} more")
        return "\n".join(lines)


def discover_train_test(data_dir: PathLike) -> tuple[SampleList, SampleList]:
    """``data_dir/train/<class>/`` and ``data_dir/test/<class>/``; test classes must be among train's."""
    data_dir = Path(data_dir)
    _require_dir(data_dir, "a dataset folder holding train/<class>/ and test/<class>/")
    for split in ("train", "test"):
        if not (data_dir / split).is_dir():
            raise DatasetError(
                f"{data_dir}: has no {split}/ folder (expected {data_dir}/train/<class>/ and {data_dir}/test/<class>/)"
            )
    train = class_folder_samples(data_dir / "train")
    test = class_folder_samples(data_dir / "test", class_names=train.class_names, allow_empty_classes=True)
    return train, test
