"""Planted label noise, to measure a label-error finder: a copy of a class-folder dataset with a known share of
images filed under the wrong class, and the precision / recall of the images a finder flags.

Two kinds of flips (``mode``):

* ``random``: the wrong class is drawn uniformly from the other classes (the easy case: the image looks nothing
  like its new class);
* ``similar``: the wrong class is the one *most similar* to the true one, the mistake a person labelling cars
  makes (Challenger vs Charger, convertible vs coupe of one model). Similar means, in this order: the class a
  ``similar_map`` CSV (columns ``class,similar``) names; otherwise the class with the highest name score
  ``[same make] + [same body style] + difflib ratio of the names`` (make: the first word; body style: the last
  word before a trailing year, e.g. Convertible, Coupe, Sedan, SUV; ties by name), so "Dodge Challenger SRT8
  2011" -> "Dodge Charger SRT-8 2009", "Chevrolet Corvette Convertible 2012" -> "Chevrolet Corvette ZR1 2012"
  or, without another Corvette, another Convertible. Names stand in for visual confusion because they need no
  trained model (a confusion matrix would need a clean run first), and for Stanford Cars the real confusions
  are within a make and model or within a body style.

The copy is made of hard links (copies across filesystems), so the source dataset is only read.
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ws_dan.common.io import InputError, PathLike

LOG = logging.getLogger(__name__)

MODES = ("random", "similar")
FLIPS_NAME = "planted_flips.csv"
FLIP_FIELDS = ("path", "true_label", "given_label")


def read_similar_map(path: PathLike, class_names: Sequence[str]) -> dict[str, str]:
    """``class -> similar class`` from a CSV with the columns ``class,similar``; both must be known classes."""
    from ws_dan.common.io import read_csv_rows

    path = Path(path)
    try:
        rows = read_csv_rows(path)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the similar-class map ({e})") from None
    known = set(class_names)
    out = {}
    for n, row in enumerate(rows, 2):
        a, b = (row.get("class") or "").strip(), (row.get("similar") or "").strip()
        if a not in known or b not in known or a == b:
            raise InputError(f"{path}: line {n}: expected columns class,similar naming two different classes of "
                             f"the dataset, found {a!r}, {b!r}")
        out[a] = b
    return out


def _make_and_body(name: str) -> tuple[str, str]:
    """The first word and the last word before a trailing year ("Audi S5 Coupe 2012" -> "audi", "coupe")."""
    words = name.lower().split()
    if len(words) > 1 and words[-1].isdigit():
        words = words[:-1]
    return (words[0], words[-1]) if words else ("", "")


def name_similarity(a: str, b: str) -> float:
    """``[same make] + [same body style] + difflib ratio`` of two class names (see the module docstring)."""
    (make_a, body_a), (make_b, body_b) = _make_and_body(a), _make_and_body(b)
    return (make_a == make_b) + (body_a == body_b) + difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def similar_classes(class_names: Sequence[str], fixed: Optional[dict[str, str]] = None) -> dict[str, str]:
    """For each class, the one a ``similar`` flip files its images under (see the module docstring)."""
    fixed = fixed or {}
    return {name: fixed.get(name) or max(sorted(c for c in class_names if c != name),
                                         key=functools.partial(name_similarity, name))
            for name in class_names}


def plan_flips(labels: Sequence[str], class_names: Sequence[str], fraction: float, mode: str, seed: int = 0,
               similar: Optional[dict[str, str]] = None) -> dict[int, str]:
    """``{image index: wrong class}`` for ``round(fraction x N)`` images drawn uniformly at random (``seed``)."""
    if mode not in MODES:
        raise InputError(f"--mode {mode}: expected one of {', '.join(MODES)}")
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"--fraction {fraction}: expected a share from 0 to below 1")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(labels), size=int(round(fraction * len(labels))), replace=False)
    similar = similar or similar_classes(class_names)
    flips = {}
    for i in sorted(int(i) for i in chosen):
        true = labels[i]
        if mode == "similar":
            flips[i] = similar[true]
        else:
            others = [c for c in class_names if c != true]
            flips[i] = others[int(rng.integers(len(others)))]
    return flips


@dataclass
class NoisyCopy:
    """A dataset copy with planted flips: ``flips`` maps the copy's path (relative to ``root``) to
    ``(true class, given class)``."""

    root: Path
    images: int
    flips: dict[str, tuple[str, str]]


def write_noisy_copy(data_dir: PathLike, out_dir: PathLike, fraction: float, mode: str, seed: int = 0,
                     similar_map: Optional[PathLike] = None) -> NoisyCopy:
    """Hard-link the class folders of ``data_dir`` (``train/<class>/`` or ``<class>/``) into ``out_dir/data/<class>/``
    with a share ``fraction`` of the images under a wrong class (``mode``); ``out_dir/planted_flips.csv`` lists
    them (path relative to the copy, true_label, given_label). ``out_dir`` must be new or empty."""
    from data_tools.label_review import labelled_images
    from ws_dan.common.io import write_csv
    from ws_dan.common.outputs import (
        copy_file,
        finish_output_dir,
        output_path,
        prepare_output_dir,
        remove_tree,
        unique_path,
    )

    found = labelled_images(data_dir)
    names = [found.class_names[t] for t in found.labels]
    fixed = read_similar_map(similar_map, found.class_names) if similar_map else None
    flips = plan_flips(names, found.class_names, fraction, mode, seed, similar_classes(found.class_names, fixed))
    out = Path(out_dir)
    root = out / "data"
    ours = (out / FLIPS_NAME).is_file()
    if ours:  # a copy this function made: made again (the finder's folds beside it are reused when it is the same)
        (out / FLIPS_NAME).unlink()
        remove_tree(root)
    elif out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out}: the folder exists, is not empty and holds no planted-noise copy ({FLIPS_NAME}); "
                         f"choose a new folder")
    prepare_output_dir(root, [data_dir], tool="label_noise", settings={"fraction": fraction, "mode": mode,
                                                                        "seed": seed})
    rels = {i: Path(flips.get(i, img.label)) / img.rel.relative_to(img.label) for i, img in enumerate(found.images)}
    # A flipped image may meet a file of the same name in its new class: it takes a free sibling name.
    taken = {str(rels[i]).lower() for i in rels if i not in flips}
    for i in flips:
        rels[i] = unique_path(rels[i], taken, tag="flip")
    for i, img in enumerate(found.images):
        copy_file(img.path, output_path(root, rels[i]), link=True)
    planted = {rels[i].as_posix(): (found.images[i].label, flips[i]) for i in flips}
    write_csv(out / FLIPS_NAME, [{"path": p, "true_label": t, "given_label": g}
                                 for p, (t, g) in sorted(planted.items())], FLIP_FIELDS)
    finish_output_dir(root)
    LOG.info("%s: %d of %d images filed under a %s wrong class", root, len(planted), len(found.images), mode)
    return NoisyCopy(root, len(found.images), planted)


def flag_scores(flagged: Iterable[str], planted: Iterable[str]) -> dict[str, float]:
    """Precision, recall and F1 of the ``flagged`` items against the ``planted`` (truly wrong) ones.

    precision = |flagged & planted| / |flagged| (1 when nothing is flagged: no false alarm),
    recall = |flagged & planted| / |planted| (1 when nothing was planted), F1 their harmonic mean."""
    flagged, planted = set(flagged), set(planted)
    hit = len(flagged & planted)
    precision = hit / len(flagged) if flagged else 1.0
    recall = hit / len(planted) if planted else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"flagged": len(flagged), "found": hit, "precision": precision, "recall": recall, "f1": f1}


def score_methods(probs: np.ndarray, labels: np.ndarray, paths: Sequence[str], planted: Iterable[str],
                  methods: Sequence[str], extra: Optional[dict[str, Sequence[int]]] = None) -> list[dict]:
    """One row per method: :func:`flag_scores` of ``data_tools.label_issues.find_label_issues(probs, labels,
    method)`` against the ``planted`` paths (rows of ``probs`` with NaN, unreadable images, are left out).
    ``extra``: more ``name -> flagged row indices`` (e.g. another library's answer) scored the same way."""
    from data_tools.label_issues import find_label_issues

    ok = np.flatnonzero(np.isfinite(probs).all(axis=1))
    planted = set(planted)
    rows = []
    for method in methods:
        flagged = ok[find_label_issues(probs[ok], labels[ok], method)]
        rows.append({"method": method, **flag_scores((paths[i] for i in flagged), planted),
                     "indices": flagged.tolist()})
    for name, flagged in (extra or {}).items():
        rows.append({"method": name, **flag_scores((paths[i] for i in flagged), planted),
                     "indices": list(map(int, flagged))})
    return rows


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|a & b| / |a | b| (1 for two empty sets): how far two finders agree."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0
