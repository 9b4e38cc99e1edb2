"""The standard fine-grained benchmarks, from the files they ship as, to ``train/<class>/`` and ``test/<class>/``.

Papers report these datasets on their official splits; this module reads the official annotation files (not a
re-sorted copy somebody else made) and writes the class-folder layout every loader here reads:

==================  ==================================================================  =======  ===============
name                what the source must hold                                           classes  train / test
==================  ==================================================================  =======  ===============
``stanford-cars``   ``cars_train/``, ``cars_test/``, the devkit's ``cars_meta.mat`` and     196   8,144 / 8,041
                    ``cars_train_annos.mat``, ``cars_test_annos_withlabels.mat``
                    (also torchvision's ``stanford_cars/`` folder and Kaggle's nesting)
``cub-200-2011``    ``images/``, ``images.txt``, ``image_class_labels.txt``,                200   5,994 / 5,794
                    ``train_test_split.txt``, ``classes.txt`` (``bounding_boxes.txt``)
``fgvc-aircraft``   ``data/images/``, ``data/images_variant_{train,val,test}.txt``,         100   3,334 (+3,333
                    ``data/variants.txt`` (``data/images_box.txt``)                                 val) / 3,333
``stanford-dogs``   ``Images/``, ``train_list.mat``, ``test_list.mat`` (in ``lists/`` or   120   12,000 / 8,580
                    beside ``Images/``; ``Annotation/`` for boxes)
==================  ==================================================================  =======  ===============

What the output holds and why:

* Images are hard-linked by default (no extra disk space, the source never changes: every tool here writes by
  rename, never in place) or copied (``copy=True``); a link that cannot be made (another filesystem) is a copy.
  A symlink in the source is followed, so the output holds the real file, never a link that could dangle.
* FGVC-Aircraft images carry a 20-pixel copyright banner at the bottom, which the dataset's README says to
  remove; they are written as new JPEGs ``height - 20`` pixels high. ``crop_bbox`` likewise writes every image
  cropped to its annotated box (cars: ``bbox_x1..bbox_y2``; CUB: ``x y w h``; aircraft: ``images_box.txt``;
  dogs: the first ``<object>`` of the VOC XML in ``Annotation/``). Cars, aircraft and dogs boxes are 1-based and
  inclusive (MATLAB / VOC: the top-left pixel is (1, 1)), CUB's are 0-based ``x y w h``; all are in the stored
  pixel grid, so an EXIF-rotated photo is cut before it is turned upright. Re-encoded at JPEG q95, 4:4:4.
* Class folders are the datasets' own class names (cars_meta.mat, classes.txt, variants.txt, the dogs' folder
  names), made safe for file systems by :func:`data_tools.url_list.safe_folder_name` (``F/A-18`` -> ``F_A-18``);
  ``classes.csv`` maps the official class id to the name and the folder.
* ``prepare_manifest.csv`` lists every image (split, class, output path, source, how it was written, box),
  ``skipped.csv`` what was left out and why, ``prepare_report.json`` the counts next to the official ones.
* The counts are checked against the published ones; a difference is a warning (a small or partial copy is
  still preparable), or an error before anything is written when ``strict``.

The data-tool rules hold (:mod:`ws_dan.common.outputs`): the output folder is new or empty and not nested with the
source, every file appears complete (atomic rename), an interrupted run is finished by the same command, and no
path taken from an annotation file can point outside the source (``..`` or absolute paths are refused) or the
output (file and folder names are sanitised).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image

from data_tools.parallel import Progress, parallel_map
from data_tools.url_list import safe_folder_name
from ws_dan.common.images import (
    DEFAULT_MAX_PIXELS,
    SkippedFile,
    UnreadableImageError,
    open_image,
    read_image_info,
    sniff_format,
)
from ws_dan.common.io import InputError, PathLike
from ws_dan.common.outputs import (
    check_not_nested,
    copy_file,
    finish_output_dir,
    is_within,
    marker_matches,
    output_path,
    prepare_output_dir,
    real_path,
    remove_tree,
    save_image,
    unique_path,
)

# Under "ws_dan" like the other data tools, so the scripts' setup_logging shows it
# (ws_dan.common.runtime.PROJECT_LOGGERS).
LOG = logging.getLogger(__name__)

#: Rows of copyright banner at the bottom of every FGVC-Aircraft image (its README: "Please make sure to remove
#: this banner when using the images to train and evaluate algorithms").
AIRCRAFT_BANNER = 20
#: JPEG quality of the images this tool re-encodes (banner removed, box crops): visually lossless.
DEFAULT_QUALITY = 95

MANIFEST_NAME = "prepare_manifest.csv"
CLASSES_NAME = "classes.csv"
SKIPPED_NAME = "skipped.csv"
REPORT_NAME = "prepare_report.json"
MANIFEST_FIELDS = ("split", "class", "path", "source", "how", "box")
SPLITS = ("train", "val", "test")
#: The tool name in the interrupted-run marker.
TOOL = "prepare_dataset"

#: A box as PIL's ``Image.crop`` takes it: left, top, right, bottom in 0-based pixels, right/bottom exclusive.
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One image of the official split: where it is, which split and class it belongs to, its box if wanted."""

    split: str
    label: int  # 0-based index into Layout.classes
    source: Path
    box: Optional[Box] = None
    reason: str = ""  # non-empty: the image cannot be used (a missing annotation ...), reported as skipped


@dataclass
class Layout:
    """What a reader found in the source: the class names in official order and the samples."""

    classes: list[str]
    samples: list[Sample]
    files: dict[str, str] = field(default_factory=dict)  # annotation files read: role -> path
    banner: int = 0  # rows to cut off the bottom of every image


@dataclass(frozen=True)
class Benchmark:
    """A dataset this module can prepare, with the counts its authors published."""

    name: str
    title: str
    classes: int
    counts: dict  # split -> images in the official split
    has_boxes: bool = True
    has_val: bool = False


BENCHMARKS = {
    "stanford-cars": Benchmark("stanford-cars", "Stanford Cars", 196, {"train": 8144, "test": 8041}),
    "cub-200-2011": Benchmark("cub-200-2011", "CUB-200-2011", 200, {"train": 5994, "test": 5794}),
    "fgvc-aircraft": Benchmark("fgvc-aircraft", "FGVC-Aircraft", 100,
                               {"train": 3334, "val": 3333, "test": 3333}, has_val=True),
    "stanford-dogs": Benchmark("stanford-dogs", "Stanford Dogs", 120, {"train": 12000, "test": 8580}),
}
_ALIASES = {"cars": "stanford-cars", "stanford-cars-196": "stanford-cars", "cub": "cub-200-2011",
            "cub-200": "cub-200-2011", "cub200": "cub-200-2011", "aircraft": "fgvc-aircraft",
            "fgvc-aircraft-2013b": "fgvc-aircraft", "dogs": "stanford-dogs"}


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` wrote; ``summary`` is also ``prepare_report.json``."""

    output_dir: Path
    manifest: list[dict]
    skipped: list[SkippedFile]
    summary: dict


def benchmark_name(name: str) -> str:
    """The canonical name of a benchmark (``cars``, ``CUB_200_2011`` ... are accepted); InputError if unknown."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise InputError(f"{name!r}: unknown dataset; expected one of {', '.join(BENCHMARKS)}")
    return key


# ---------------------------------------------------------------------------------------------------------------
# Finding and reading the official files


def _locate(root: Path, candidates: Sequence[str], what: str, want_dir: bool = False) -> Path:
    """The first of ``root/candidate`` that exists (as a folder when ``want_dir``), else one clear error."""
    for rel in candidates:
        p = root / rel
        if (p.is_dir() if want_dir else p.is_file()):
            return p
    also = f" (also looked for {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
    raise InputError(f"{root / candidates[0]}: expected {what}{also}, found nothing")


def _base(root: Path, subfolders: Sequence[str], markers: Sequence[str]) -> Path:
    """The dataset's own folder: ``root`` itself or the sub-folder its archive extracts to (the first holding
    any of ``markers``)."""
    if not root.is_dir():
        what = "nothing (the path does not exist)" if not root.exists() else "a file"
        raise InputError(f"{root}: expected the dataset's folder as it ships, found {what}")
    for base in [root, *(root / s for s in subfolders)]:
        if any((base / m).exists() for m in markers):
            return base
    return root


def _inside(base: Path, rel: str, where: str) -> Path:
    """``base/rel`` for a relative path read from an annotation file; refuses one that leaves ``base``."""
    rel = rel.strip().replace("\\", "/")
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise InputError(f"{where}: image path {rel!r} is not a relative path inside {base}; "
                            f"expected a name like the dataset's own (e.g. 00001.jpg)")
    return base.joinpath(*parts)


def _read_lines(path: Path, fields: int, what: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a whitespace-separated text file; the last field takes the rest of the line."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read it as UTF-8 text ({e}); expected {what}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(None, fields - 1)
        if len(parts) != fields:
            raise InputError(f"{path}:{n}: expected {what}, found {line.strip()!r}")
        rows.append((n, parts))
    return rows


def _number(text: str, where: str, what: str, kind: Callable = int) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise InputError(f"{where}: expected {what}, found {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise InputError(f"{where}: expected {what}, found {text!r}")
    return value


def _load_mat(path: Path, keys: Sequence[str], what: str) -> dict:
    """The named variables of a MATLAB file, squeezed (scalars are scalars, cell arrays 1-d arrays)."""
    import numpy as np
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), squeeze_me=True)
    except Exception as e:  # scipy raises ValueError, MatReadError, TypeError ... for a file that is not a .mat
        raise InputError(f"{path}: cannot read it as a MATLAB .mat file ({e}); expected {what}") from None
    missing = [k for k in keys if k not in mat]
    if missing:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise InputError(f"{path}: has no variable {missing[0]!r} (found: {found}); expected {what}")
    return {k: np.atleast_1d(mat[k]) for k in keys}


def _struct_rows(path: Path, array: Any, fields: Sequence[str], what: str) -> list[dict]:
    names = array.dtype.names or ()
    missing = [f for f in fields if f not in names]
    if missing:
        hint = ""
        if "class" in missing and path.name == "cars_test_annos.mat":
            hint = " (this is the unlabelled test file; the labels are in cars_test_annos_withlabels.mat)"
        raise InputError(f"{path}: the struct has no field {missing[0]!r} (fields: {', '.join(names) or 'none'})"
                            f"{hint}; expected {what}")
    return [{f: rec[f] for f in fields} for rec in array]


def _class_index(value: Any, n: int, where: str) -> int:
    """A 1-based class id from an annotation -> 0-based index, checked against the number of classes."""
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a class id 1..{n}, found {value!r}") from None
    if not 1 <= k <= n:
        raise InputError(f"{where}: class id {k} is outside 1..{n} (the number of classes)")
    return k - 1


def _box_1based(x1: Any, y1: Any, x2: Any, y2: Any, where: str) -> Box:
    """An inclusive box whose top-left pixel is (1, 1) (MATLAB, PASCAL VOC, FGVC-Aircraft) -> PIL's box."""
    vals = [_number(str(v), where, "a bounding-box coordinate", float) for v in (x1, y1, x2, y2)]
    return (vals[0] - 1, vals[1] - 1, vals[2], vals[3])


def read_stanford_cars(root: Path, crop_bbox: bool = False) -> Layout:
    """Stanford Cars: ``cars_train/``, ``cars_test/``, the devkit ``.mat`` files and the labelled test annotations.

    ``annotations`` is a struct array with ``bbox_x1, bbox_y1, bbox_x2, bbox_y2`` (MATLAB pixels, 1-based,
    inclusive), ``class`` (1-based id into ``cars_meta.mat``'s ``class_names``) and ``fname``.
    """
    base = _base(root, ["stanford_cars"], ["cars_train", "devkit", "car_devkit", "cars_meta.mat"])
    devkits = ["devkit/", "car_devkit/devkit/", ""]
    meta = _locate(base, [f"{d}cars_meta.mat" for d in devkits], "the devkit's class names (cars_meta.mat)")
    annos = {
        "train": _locate(base, [f"{d}cars_train_annos.mat" for d in devkits],
                         "the devkit's training annotations (cars_train_annos.mat)"),
        "test": _locate(base, ["cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat",
                               "car_devkit/devkit/cars_test_annos_withlabels.mat"],
                        "the labelled test annotations (cars_test_annos_withlabels.mat; the devkit's "
                        "cars_test_annos.mat has no labels)"),
    }
    folders = {}
    for split in annos:
        folder = _locate(base, [f"cars_{split}"], f"the folder of {split} images (cars_{split}/)", want_dir=True)
        # Kaggle's copy nests every image folder in one of the same name (cars_train/cars_train/00001.jpg).
        folders[split] = folder / folder.name if (folder / folder.name).is_dir() else folder
    classes = [str(c) for c in _load_mat(meta, ["class_names"], "a cell array 'class_names'")["class_names"]]
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    samples = []
    for split, path in annos.items():
        what = f"an 'annotations' struct array with fields {', '.join(fields)}"
        rows = _struct_rows(path, _load_mat(path, ["annotations"], what)["annotations"], fields, what)
        for n, r in enumerate(rows, 1):
            where = f"{path} (annotation {n})"
            box = _box_1based(r["bbox_x1"], r["bbox_y1"], r["bbox_x2"], r["bbox_y2"], where) if crop_bbox else None
            samples.append(Sample(split, _class_index(r["class"], len(classes), where),
                                  _inside(folders[split], str(r["fname"]), where), box))
    files = {"class names": str(meta), **{f"{s} annotations": str(p) for s, p in annos.items()}}
    return Layout(classes, samples, files)


def read_cub(root: Path, crop_bbox: bool = False) -> Layout:
    """CUB-200-2011: ``images.txt`` (id path), ``image_class_labels.txt`` (id class), ``train_test_split.txt``
    (id 1=train 0=test), ``classes.txt`` (class name), ``bounding_boxes.txt`` (id x y w h, 0-based pixels)."""
    base = _base(root, ["CUB_200_2011"], ["images.txt", "classes.txt"])
    images_dir = _locate(base, ["images"], "the folder of images (images/<class>/<file>.jpg)", want_dir=True)
    paths = {}
    for role, name, what in [("images", "images.txt", "'<image_id> <path>'"),
                             ("labels", "image_class_labels.txt", "'<image_id> <class_id>'"),
                             ("split", "train_test_split.txt", "'<image_id> <1 for train, 0 for test>'"),
                             ("classes", "classes.txt", "'<class_id> <class name>'")]:
        paths[role] = (_locate(base, [name], f"CUB's list of {what} lines ({name})"), what)
    if crop_bbox:
        paths["boxes"] = (_locate(base, ["bounding_boxes.txt"], "CUB's boxes ('<image_id> <x> <y> <w> <h>')"),
                          "'<image_id> <x> <y> <width> <height>'")

    def table(role: str, fields: int) -> dict[int, tuple[str, list[str]]]:
        path, what = paths[role]
        out = {}
        for n, parts in _read_lines(path, fields, what):
            where = f"{path}:{n}"
            out[_number(parts[0], where, "an integer id first")] = (where, parts[1:])
        return out

    class_rows = table("classes", 2)
    ids = sorted(class_rows)
    if ids != list(range(1, len(ids) + 1)):
        raise InputError(f"{paths['classes'][0]}: expected class ids 1..{len(ids)} in order, found {ids[:5]}...")
    classes = [class_rows[k][1][0] for k in ids]
    labels, splits = table("labels", 2), table("split", 2)
    boxes = table("boxes", 5) if crop_bbox else {}
    samples = []
    for image_id, (where, (rel,)) in sorted(table("images", 2).items()):
        for role, t in (("labels", labels), ("split", splits)):
            if image_id not in t:
                raise InputError(f"{paths[role][0]}: has no line for image {image_id} ({where}); "
                                    f"expected one {paths[role][1]} line per image")
        lwhere, (label,) = labels[image_id]
        swhere, (flag,) = splits[image_id]
        if flag not in ("0", "1"):
            raise InputError(f"{swhere}: expected 1 (train) or 0 (test), found {flag!r}")
        box, reason = None, ""
        if crop_bbox:
            if image_id in boxes:
                bwhere, b = boxes[image_id]
                x, y, w, h = (_number(v, bwhere, "a box coordinate", float) for v in b)
                box = (x, y, x + w, y + h)
            else:
                reason = f"no bounding box in {paths['boxes'][0]}"
        samples.append(Sample("train" if flag == "1" else "test",
                              _class_index(label, len(classes), lwhere), _inside(images_dir, rel, where), box, reason))
    files = {role: str(p) for role, (p, _) in paths.items()}
    return Layout(classes, samples, files)


def read_aircraft(root: Path, crop_bbox: bool = False, trainval: bool = False) -> Layout:
    """FGVC-Aircraft (variants): ``data/images_variant_{train,val,test}.txt`` (``<id> <variant>``),
    ``data/variants.txt``, ``data/images_box.txt`` (``<id> xmin ymin xmax ymax``, top-left pixel (1, 1)).

    ``trainval`` merges train and val into ``train`` (as papers report it); otherwise val is its own split.
    Every image loses its bottom :data:`AIRCRAFT_BANNER` rows.
    """
    base = _base(root, ["fgvc-aircraft-2013b"], ["data"])
    data = base / "data" if (base / "data").is_dir() else base  # also accept the data/ folder itself
    images_dir = _locate(data, ["images"], "the folder of images (images/<id>.jpg)", want_dir=True)
    variants = _locate(data, ["variants.txt"], "the list of the 100 variant names (variants.txt)")
    lists = {s: _locate(data, [f"images_variant_{s}.txt"], f"the {s} list ('<image id> <variant>' lines)")
             for s in SPLITS}
    try:
        classes = [line.strip() for line in variants.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{variants}: cannot read it as UTF-8 text ({e}); expected one variant per line") from None
    index = {c: k for k, c in enumerate(classes)}
    boxes: dict[str, tuple[str, list[str]]] = {}
    files = {"classes": str(variants), **{f"{s} list": str(p) for s, p in lists.items()}}
    if crop_bbox:
        box_file = _locate(data, ["images_box.txt"], "the boxes ('<image id> <xmin> <ymin> <xmax> <ymax>' lines)")
        files["boxes"] = str(box_file)
        for n, parts in _read_lines(box_file, 5, "'<image id> <xmin> <ymin> <xmax> <ymax>'"):
            boxes[parts[0]] = (f"{box_file}:{n}", parts[1:])
    samples = []
    for split, path in lists.items():
        for n, (image_id, variant) in _read_lines(path, 2, "'<image id> <variant name>'"):
            where = f"{path}:{n}"
            if variant not in index:
                raise InputError(f"{where}: variant {variant!r} is not in {variants}")
            box, reason = None, ""
            if crop_bbox:
                if image_id in boxes:
                    box = _box_1based(*boxes[image_id][1], boxes[image_id][0])
                else:
                    reason = f"no bounding box in {files['boxes']}"
            out_split = "train" if trainval and split == "val" else split
            samples.append(Sample(out_split, index[variant], _inside(images_dir, f"{image_id}.jpg", where), box,
                                  reason))
    return Layout(classes, samples, files, banner=AIRCRAFT_BANNER)


def _voc_box(path: Path) -> tuple[Optional[Box], str]:
    """The first object's box of a PASCAL VOC XML annotation (Stanford Dogs' Annotation/ files), or a reason."""
    import xml.etree.ElementTree as ET

    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        return None, f"no annotation file {path}"
    except (OSError, ET.ParseError) as e:
        return None, f"annotation {path} is not readable XML ({e})"
    bndbox = tree.getroot().find("object/bndbox")
    try:
        coords = [bndbox.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr]
        return _box_1based(*coords, str(path)), ""
    except (AttributeError, InputError):
        return None, f"annotation {path} has no <object><bndbox> with xmin, ymin, xmax, ymax"


def read_stanford_dogs(root: Path, crop_bbox: bool = False) -> Layout:
    """Stanford Dogs: ``train_list.mat`` / ``test_list.mat`` with ``file_list`` (``<wnid>-<breed>/<file>.jpg``
    inside ``Images/``), ``labels`` (1..120) and ``annotation_list`` (the matching ``Annotation/`` XML file)."""
    base = _base(root, ["stanford-dogs", "stanford_dogs"], ["Images", "images", "lists", "train_list.mat"])
    images_dir = _locate(base, ["Images", "images"], "the folder of images (Images/<wnid>-<breed>/...)", want_dir=True)
    lists = {s: _locate(base, [f"lists/{s}_list.mat", f"{s}_list.mat"], f"the {s} list ({s}_list.mat from lists.tar)")
             for s in ("train", "test")}
    ann_dir = None
    if crop_bbox:
        ann_dir = _locate(base, ["Annotation", "annotation", "Annotations", "annotations"],
                          "the folder of box annotations (Annotation/ from annotation.tar)", want_dir=True)
    entries = []
    keys = ["file_list", "labels", "annotation_list"] if crop_bbox else ["file_list", "labels"]
    for split, path in lists.items():
        mat = _load_mat(path, keys, f"cell arrays {', '.join(repr(k) for k in keys)}")
        if len(mat["file_list"]) != len(mat["labels"]):
            raise InputError(f"{path}: 'file_list' has {len(mat['file_list'])} entries but 'labels' "
                                f"{len(mat['labels'])}; expected one label per file")
        for n, (rel, label) in enumerate(zip(mat["file_list"], mat["labels"]), 1):
            ann = str(mat["annotation_list"][n - 1]) if crop_bbox else ""
            entries.append((split, f"{path} (entry {n})", str(rel), label, ann))
    # The class names are the breed folders; the label ids number them, so every id must name one folder.
    names: dict[int, str] = {}
    for _split, where, rel, label, _ann in entries:
        k = _number(str(label), where, "a label id 1, 2, ...") - 1
        if k < 0:
            raise InputError(f"{where}: expected a label id 1, 2, ..., found {label!r}")
        folder = rel.replace("\\", "/").split("/")[0]
        if names.setdefault(k, folder) != folder:
            raise InputError(f"{where}: label {k + 1} is {names[k]!r} elsewhere but {folder!r} here; expected "
                                f"one breed folder per label")
    ids = sorted(names)
    if ids != list(range(len(ids))):
        missing = sorted(set(range(max(ids) + 1)) - set(ids)) if ids else [0]
        raise InputError(f"{lists['train']}: no image has label {missing[0] + 1}; expected labels 1..{len(ids)}")
    classes = [names[k] for k in ids]
    samples = []
    for split, where, rel, label, ann in entries:
        box, reason = None, ""
        if crop_bbox and ann_dir is not None:
            box, reason = _voc_box(_inside(ann_dir, ann, where))
        samples.append(Sample(split, int(label) - 1, _inside(images_dir, rel, where), box, reason))
    files = {f"{s} list": str(p) for s, p in lists.items()}
    if ann_dir is not None:
        files["annotations"] = str(ann_dir)
    return Layout(classes, samples, files)


_READERS: dict[str, Callable[..., Layout]] = {
    "stanford-cars": read_stanford_cars, "cub-200-2011": read_cub, "fgvc-aircraft": read_aircraft,
    "stanford-dogs": read_stanford_dogs,
}


def read_layout(name: str, source: PathLike, crop_bbox: bool = False, trainval: bool = False) -> Layout:
    """Read benchmark ``name``'s official files under ``source`` (nothing is written)."""
    name = benchmark_name(name)
    kwargs = {"trainval": trainval} if name == "fgvc-aircraft" else {}
    if trainval and not BENCHMARKS[name].has_val:
        LOG.warning("%s has no validation split; --trainval has no effect", name)
    return _READERS[name](Path(source), crop_bbox=crop_bbox, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Counts


def expected_counts(name: str, trainval: bool = False) -> dict:
    """The published images per output split (train + val merged when ``trainval``)."""
    counts = dict(BENCHMARKS[benchmark_name(name)].counts)
    if trainval and "val" in counts:
        counts["train"] += counts.pop("val")
    return counts


def count_mismatches(name: str, counts: dict, classes: int, trainval: bool = False) -> list[str]:
    """Human-readable differences between these counts and the published ones (empty when they agree)."""
    bench = BENCHMARKS[benchmark_name(name)]
    out = [f"{split} has {counts.get(split, 0):,} images (official: {n:,})"
           for split, n in expected_counts(name, trainval).items() if counts.get(split, 0) != n]
    if classes != bench.classes:
        out.append(f"{classes:,} classes (official: {bench.classes:,})")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Writing


def class_folder_names(classes: Sequence[str]) -> list[str]:
    """One safe, distinct folder name per class (two names that become the same folder get ``__<id>``)."""
    folders, seen = [], set()
    for k, name in enumerate(classes, 1):
        folder = safe_folder_name(name)
        if folder.lower() in seen:  # lower(): one folder on case-insensitive filesystems
            LOG.warning("class %d %r: folder name %r is taken by another class; using %r", k, name, folder,
                        f"{folder}__{k}")
            folder = f"{folder}__{k}"
        seen.add(folder.lower())
        folders.append(folder)
    return folders


@dataclass(frozen=True)
class _Job:
    src: str  # the real file (symlinks resolved)
    root: str  # the output folder
    rel: str  # the file's path inside it
    box: Optional[Box]
    banner: int
    link: bool
    quality: int
    resuming: bool

    @property
    def edits(self) -> bool:
        return self.box is not None or self.banner > 0


_T = Image.Transpose
#: EXIF orientation -> (stored -> upright, upright -> stored), turned as PIL's ImageOps.exif_transpose turns them.
_ORIENTATION = {2: (_T.FLIP_LEFT_RIGHT, _T.FLIP_LEFT_RIGHT), 3: (_T.ROTATE_180, _T.ROTATE_180),
                4: (_T.FLIP_TOP_BOTTOM, _T.FLIP_TOP_BOTTOM), 5: (_T.TRANSPOSE, _T.TRANSPOSE),
                6: (_T.ROTATE_270, _T.ROTATE_90), 7: (_T.TRANSVERSE, _T.TRANSVERSE), 8: (_T.ROTATE_90, _T.ROTATE_270)}


def _crop_box(box: Optional[Box], width: int, height: int, banner: int) -> tuple[int, int, int, int]:
    """Whole pixels to keep: the box rounded outwards, clipped to the image above its banner."""
    bottom_limit = height - banner
    if box is None:
        return 0, 0, width, bottom_limit
    left, top, right, bottom = box
    return (max(0, math.floor(left)), max(0, math.floor(top)), min(width, math.ceil(right)),
            min(bottom_limit, math.ceil(bottom)))


def _write_one(job: _Job, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, str]:
    """Worker: write one output file; returns (how, reason) with how in linked/copied/cropped/already_there/skipped."""
    dst = output_path(job.root, job.rel)  # creates its folders; refuses a symlinked folder inside the output
    if job.resuming and dst.is_file():
        # Every file appears under its name only when complete, so one that exists is done; a link or copy
        # must also still match its source's size (the source may have been replaced since).
        if job.edits or dst.stat().st_size == os.stat(job.src).st_size:
            return "already_there", ""
    if not job.edits:
        return copy_file(job.src, dst, link=job.link), ""
    try:
        orientation = read_image_info(job.src, max_pixels=max_pixels).orientation
        im = open_image(job.src, max_pixels=max_pixels)  # upright: EXIF orientation applied
    except UnreadableImageError as e:
        return "skipped", e.reason
    # Boxes and banners are in the stored pixel grid (MATLAB's imread, which the annotators used, ignores EXIF
    # orientation): undo the orientation, cut, and turn the cut upright again (the JPEG written has no EXIF).
    upright, stored = _ORIENTATION.get(orientation, (None, None))
    if stored is not None:
        im = im.transpose(stored)
    kept = _crop_box(job.box, im.width, im.height, job.banner)
    if kept[2] <= kept[0] or kept[3] <= kept[1]:
        what = f"bounding box {job.box}" if job.box is not None else f"the {job.banner}-pixel banner"
        return "skipped", f"{what} leaves nothing of the {im.width}x{im.height} image"
    im = im.crop(kept)
    if upright is not None:
        im = im.transpose(upright)
    # 4:4:4 chroma: PIL's default 4:2:0 would halve the colour resolution of detail a fine-grained model needs.
    save_image(im, dst, "JPEG", quality=job.quality, subsampling=0)
    return "cropped", ""


def _check_source(path: Path, out: Path) -> tuple[Optional[Path], str]:
    """The real file behind ``path`` (symlinks followed) or None and why it cannot be used."""
    if not os.path.lexists(path):
        return None, "listed in the annotations but missing"
    real = real_path(path)
    if not real.exists():
        return None, f"listed in the annotations but a broken symlink (to {real})"
    if is_within(real, out):
        return None, f"resolves to {real}, inside the output folder (refusing to read the tool's own output)"
    if not real.is_file():
        return None, "is not a file"
    try:
        if real.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        if sniff_format(real) is None:
            return None, "not an image (unrecognised file signature)"
    except OSError as e:
        return None, f"cannot read file: {e.strerror or e}"
    return real, ""


def _refuse_output_early(out: Path, source: Path, overwrite: bool, settings: dict) -> None:
    """Refuse an output folder prepare_output_dir would refuse, before the slow checks and without creating it.

    The count check must fail before anything is written, yet a bad output folder should be named before any
    warning about the source; so the refusals come first, with prepare_output_dir's own messages.
    """
    check_not_nested(out, [source])
    refused = out.exists() and not out.is_dir()
    refused |= out.is_dir() and any(out.iterdir()) and not overwrite and not marker_matches(out, TOOL, settings)
    if refused:
        prepare_output_dir(out, [source], overwrite=False, tool=TOOL, settings=settings)  # raises, writes nothing


def prepare_dataset(name: str, source: PathLike, output_dir: PathLike, *, copy: bool = False,
                    trainval: bool = False, crop_bbox: bool = False, strict: bool = False, overwrite: bool = False,
                    quality: int = DEFAULT_QUALITY, workers: Optional[int] = None,
                    progress: Progress = False) -> PrepareResult:
    """Write benchmark ``name`` from its official files under ``source`` to ``output_dir``/{train,test}/<class>/.

    Images are hard links (``copy``: copies); FGVC-Aircraft images and, with ``crop_bbox``, every image are
    new JPEGs (``quality``) cropped to the box and/or above the banner. ``trainval`` merges FGVC-Aircraft's train
    and val. A listed image that is missing or not an image is skipped and reported; counts that differ from the
    published ones are logged as a warning. With ``strict`` either is a :class:`InputError` raised before
    anything is written (an image that fails to decode while cropping: :class:`UnreadableImageError`).
    ``overwrite`` replaces the train/, val/ and test/ folders of a non-empty output folder; an interrupted run
    with the same settings is completed without it.
    """
    name = benchmark_name(name)
    if not 1 <= quality <= 100:
        raise InputError(f"--quality {quality}: expected a JPEG quality from 1 to 100")
    src_root, out = Path(source), Path(output_dir)
    settings = {"dataset": name, "source": str(src_root.resolve()), "copy": copy, "trainval": trainval,
                "crop_bbox": crop_bbox, "quality": quality}
    layout = read_layout(name, src_root, crop_bbox=crop_bbox, trainval=trainval)
    _refuse_output_early(out, src_root, overwrite, settings)
    usable, skipped = _usable_samples(layout, src_root, real_path(out), strict)  # readable image files only
    counts = _check_counts(name, usable, src_root, trainval, strict)  # against the published ones, before writing
    resuming = prepare_output_dir(out, [src_root], overwrite=overwrite, tool=TOOL, settings=settings)
    if resuming:
        LOG.info("%s: completing an interrupted run with the same settings", out)
    elif overwrite:
        for split in SPLITS:
            remove_tree(out / split)
    order, rels, jobs = _jobs(usable, layout, out, copy, quality, resuming)  # one per image, names made unique
    # Links and copies are disk-bound: extra processes would only compete for the disk.
    results = parallel_map(_write_one, jobs, workers=workers if any(j.edits for j in jobs) else 0,
                           progress=progress, desc=f"writing {name}")
    manifest, written, how = _collect(results, order, rels, usable, layout, counts, skipped, strict)
    _write_reports(out, layout, manifest, skipped)
    bench = BENCHMARKS[name]
    summary = {
        "dataset": name, "title": bench.title, "source": str(src_root), "output_dir": str(out),
        "files_read": layout.files, "images": sum(written.values()), "splits": written,
        "classes": len({r["class"] for r in manifest}), "classes_listed": len(layout.classes),
        "official": {"splits": expected_counts(name, trainval), "classes": bench.classes},
        "mismatches": count_mismatches(name, written, len({r["class"] for r in manifest}), trainval),
        "skipped": len(skipped), "copy": copy, "trainval": trainval, "crop_bbox": crop_bbox,
        "banner_removed": layout.banner, **how,
    }
    from ws_dan.common.io import write_json

    write_json(out / REPORT_NAME, summary)
    finish_output_dir(out)
    return PrepareResult(out, manifest, skipped, summary)


def _usable_samples(layout: Layout, src_root: Path, out_resolved: Path, strict: bool
                    ) -> tuple[list[tuple[Sample, Path]], list[SkippedFile]]:
    """Every listed image must be a readable image file; the unusable ones are skipped (strict: an error).
    Returns (sample, its real path) for the others, and the skipped."""
    skipped: list[SkippedFile] = []
    usable: list[tuple[Sample, Path]] = []
    for s in layout.samples:
        real, reason = (None, s.reason) if s.reason else _check_source(s.source, out_resolved)
        if real is None:
            if strict:
                raise InputError(f"{s.source}: {reason} (--strict)")
            skipped.append(SkippedFile(s.source, reason))
        else:
            usable.append((s, real))
    if skipped:
        LOG.warning("%s: %d listed image(s) cannot be used and are left out (see %s), e.g. %s: %s", src_root,
                    len(skipped), SKIPPED_NAME, skipped[0].path, skipped[0].reason)
    return usable, skipped


def _check_counts(name: str, usable: list[tuple[Sample, Path]], src_root: Path, trainval: bool,
                  strict: bool) -> dict[str, int]:
    """Images per split, compared with the published counts: a difference is a warning (strict: an error)."""
    counts = {split: 0 for split in expected_counts(name, trainval)}
    for s, _ in usable:
        counts[s.split] = counts.get(s.split, 0) + 1
    n_classes = len({s.label for s, _ in usable})
    mismatches = count_mismatches(name, counts, n_classes, trainval)
    if mismatches:
        message = f"{src_root}: {'; '.join(mismatches)}; is it a complete copy of {BENCHMARKS[name].title}?"
        if strict:
            raise InputError(message + " (--strict)")
        LOG.warning("%s", message)
    return counts


def _jobs(usable: list[tuple[Sample, Path]], layout: Layout, out: Path, copy: bool, quality: int,
          resuming: bool) -> tuple[list[int], list[Path], list[_Job]]:
    """One job per image, in split / class / name order; destination names are sanitised and made unique.
    Returns the order (positions in ``usable``), each job's destination and the jobs."""
    folders = class_folder_names(layout.classes)
    taken: set = set()
    jobs, rels = [], []
    order = sorted(range(len(usable)), key=lambda k: (SPLITS.index(usable[k][0].split), usable[k][0].label,
                                                      usable[k][0].source.name, str(usable[k][0].source)))
    for k in order:
        s, real = usable[k]
        edits = s.box is not None or layout.banner > 0
        file_name = safe_folder_name(s.source.stem if edits else s.source.name) + (".jpg" if edits else "")
        rel = unique_path(Path(s.split) / folders[s.label] / file_name, taken)
        rels.append(rel)
        jobs.append(_Job(str(real), str(out), str(rel), s.box, layout.banner, not copy, quality, resuming))
    return order, rels, jobs


def _collect(results, order: list[int], rels: list[Path], usable: list[tuple[Sample, Path]], layout: Layout,
             counts: dict[str, int], skipped: list[SkippedFile], strict: bool
             ) -> tuple[list[dict], dict[str, int], dict[str, int]]:
    """The jobs' outcomes: the manifest rows, images written per split and how (an image that failed to decode
    is added to ``skipped``; strict: an error)."""
    how = {"linked": 0, "copied": 0, "cropped": 0, "already_there": 0}
    manifest, written = [], {split: 0 for split in counts}
    for k, rel, (done, reason) in zip(order, rels, results):
        s = usable[k][0]
        if done == "skipped":
            if strict:
                raise UnreadableImageError(s.source, reason)
            skipped.append(SkippedFile(s.source, reason))
            continue
        how[done] += 1
        written[s.split] = written.get(s.split, 0) + 1
        box = "" if s.box is None else " ".join(f"{v:g}" for v in s.box)
        manifest.append({"split": s.split, "class": layout.classes[s.label], "path": rel.as_posix(),
                         "source": str(s.source), "how": done, "box": box})
    return manifest, written, how


def _write_reports(out: Path, layout: Layout, manifest: list[dict], skipped: list[SkippedFile]) -> None:
    from ws_dan.common.io import write_csv

    folders = class_folder_names(layout.classes)
    write_csv(out / MANIFEST_NAME, manifest, MANIFEST_FIELDS)
    write_csv(out / CLASSES_NAME, [{"id": k + 1, "class": c, "folder": f}
                                   for k, (c, f) in enumerate(zip(layout.classes, folders))], ["id", "class", "folder"])
    write_csv(out / SKIPPED_NAME, [{"path": str(x.path), "reason": x.reason} for x in skipped], ["path", "reason"])


__all__ = [
    "AIRCRAFT_BANNER", "BENCHMARKS", "Benchmark", "Layout", "PrepareResult", "Sample", "benchmark_name",
    "class_folder_names", "count_mismatches", "expected_counts", "prepare_dataset", "read_aircraft", "read_cub",
    "read_layout", "read_stanford_cars", "read_stanford_dogs",
]
