"""Merge a folder of new class folders into a training split, leaving out what is already there.

A new image is rejected when it is unreadable, when its class folder does not exist in the training split
(unless ``allow_new_classes``), when it duplicates (exactly or nearly, data_tools.dedupe) an image of the
training split or of any ``also_check`` folder (e.g. the test split: adding a copy of a test image to train
would leak), or when it duplicates another new image that is kept (the largest of each group is kept).

Two ways to write the result:

* default: ``output_dir/train/`` becomes the merged split (the existing training images copied, or hard-linked
  with ``link``, plus the accepted new images); the training folder is only read;
* ``in_place``: the accepted images are copied into the training folder itself. Nothing there is replaced
  (a name already taken gets ``__new``), and ``merge_added.csv`` (the shared ``data_tools.manifest`` journal,
  with the training folder recorded as the only place undo may delete from) lets :func:`undo_merge` remove
  exactly the added files again.

Symlinked images are read through (the real file is copied or hard-linked, never the link); a symlinked folder
inside the folder written to is refused rather than written through.

Reports in ``output_dir``: ``merge_added.csv``, ``merge_rejected.csv`` (with the duplicate's path, distance and
kind), ``merge_report.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from data_tools import dedupe
from data_tools.manifest import AdditionJournal, undo_additions
from data_tools.parallel import Progress, track
from ws_dan.common.dataset_folders import DatasetImage, class_folders, scan_dataset
from ws_dan.common.io import InputError, sha256_file, write_csv, write_json
from ws_dan.common.outputs import (
    check_not_nested,
    copy_file,
    finish_output_dir,
    folder_lock,
    marker_matches,
    output_path,
    prepare_output_dir,
    unique_path,
)

LOG = logging.getLogger(__name__)

#: Appended to, one line per added file, while a merge runs; replaced by merge_added.csv at the end.
JOURNAL_NAME = ".merge_added.journal.csv"
REJECTED_FIELDS = ("source", "class", "reason", "duplicate_of", "distance", "kind")


def merge_data(new_dir, train_dir, output_dir, in_place: bool = False, also_check: Sequence = (),
               allow_new_classes: bool = False, threshold: int = dedupe.DEFAULT_THRESHOLD, exact_only: bool = False,
               link: bool = False, workers: Optional[int] = None, progress: Progress = False, strict: bool = False,
               overwrite: bool = False) -> dict:
    """Merge ``new_dir/<class>/...`` into ``train_dir/<class>/...`` (see the module docstring).

    Raises :class:`~ws_dan.common.io.InputError` for missing folders, for new classes without
    ``allow_new_classes`` (naming them; nothing is written) and for an output folder nested with an input.
    Returns the summary also written to ``merge_report.json``.
    """
    dedupe.check_threshold(threshold)
    new_dir, train_dir, out = Path(new_dir), Path(train_dir), Path(output_dir)
    classes = _check_inputs(new_dir, train_dir, also_check)  # folders exist and do not overlap; the split's classes
    # In place, the training folder is written to: no other run may move files there from the scan on.
    with folder_lock([train_dir] if in_place else [], tool="merge_data --in-place"):
        return _merge(new_dir, train_dir, out, classes, in_place, also_check, allow_new_classes, threshold,
                      exact_only, link, workers, progress, strict, overwrite)


def _merge(new_dir: Path, train_dir: Path, out: Path, classes: list[str], in_place: bool, also_check: Sequence,
           allow_new_classes: bool, threshold: int, exact_only: bool, link: bool, workers: Optional[int],
           progress: Progress, strict: bool, overwrite: bool) -> dict:
    new = _scan_new(new_dir, train_dir, classes, allow_new_classes)  # the candidates; files outside a class rejected
    settings = {"new_dir": str(new_dir.resolve()), "train_dir": str(train_dir.resolve()), "in_place": in_place,
                "also_check": [str(Path(a).resolve()) for a in also_check], "threshold": threshold,
                "exact_only": exact_only, "allow_new_classes": allow_new_classes}
    dest_root = train_dir if in_place else out / "train"
    journal, resuming = _open_output(out, [new_dir, train_dir, *also_check], dest_root, in_place, overwrite,
                                     settings)  # the first write
    already_added = {str(Path(r["dest"]).resolve()) for r in journal.previous.values()}
    h = _hash(new.candidates, [train_dir, *also_check], already_added, workers, progress, strict)
    new.rejected += [{"source": str(img.path), "class": img.label, "reason": f"unreadable: {h.bad[img.path]}"}
                     for img in new.candidates if img.path in h.bad]
    verdict = _duplicates_of_reference(h, threshold, exact_only, workers)
    verdict.update(_duplicates_among_new(h, set(verdict), threshold, exact_only, workers))
    new.rejected += [{"source": str(h.new_ok[q].path), "class": h.new_ok[q].label, "reason": reason,
                      "duplicate_of": other, "distance": d, "kind": kind}
                     for q, (reason, other, d, kind) in sorted(verdict.items())]
    accepted = [h.new_ok[q] for q in range(len(h.new_ok)) if q not in verdict]
    # The merged split in output_dir/train (default) or the additions into train_dir (in place).
    train_images = [img for img in scan_dataset(train_dir, splits=False)[0]
                    if str(img.path.resolve()) not in already_added]
    copied_existing = 0 if in_place else _copy_train(train_images, dest_root, link, resuming, progress)
    taken = {str(img.rel).lower() for img in train_images}
    added = _add(accepted, journal, dest_root, taken, link and not in_place, progress)
    return _report(out, new_dir, train_dir, dest_root, new, h, added, copied_existing, in_place, allow_new_classes,
                   threshold, exact_only)


def _check_inputs(new_dir: Path, train_dir: Path, also_check: Sequence) -> list[str]:
    for folder, what in [(new_dir, "new images in class folders"), (train_dir, "the training split's class folders"),
                         *[(Path(a), "images to check against") for a in also_check]]:
        if not folder.is_dir():
            raise InputError(f"{folder}: expected a folder of {what}, found "
                             f"{'nothing (the path does not exist)' if not folder.exists() else 'a file'}")
    try:
        check_not_nested(new_dir, [train_dir])
    except InputError:
        raise InputError(f"{new_dir}: the new images' folder and the training folder {train_dir} overlap; "
                         f"keep the new images in a separate folder") from None
    classes = class_folders(train_dir)
    if not classes:
        raise InputError(f"{train_dir}: has no class sub-folders (expected {train_dir}/<class>/<images>)")
    return classes


@dataclass
class _NewImages:
    count: int  # every file found, images or not
    candidates: list[DatasetImage]  # images inside a class folder
    unknown: list[str]  # their classes the training split lacks
    rejected: list[dict]  # rows of merge_rejected.csv, in the order found


def _scan_new(new_dir: Path, train_dir: Path, classes: list[str], allow_new_classes: bool) -> _NewImages:
    new_images, new_skipped = scan_dataset(new_dir, splits=False)
    if not new_images:
        raise InputError(f"{new_dir}: no new images found (expected {new_dir}/<class>/<images>)")
    rejected = [{"source": str(s.path), "class": "", "reason": s.reason} for s in new_skipped]
    unknown = sorted({img.label for img in new_images if img.label and img.label not in classes})
    if unknown and not allow_new_classes:
        raise InputError(
            f"{new_dir}: {len(unknown)} class folder(s) not in {train_dir}: {', '.join(unknown[:8])}"
            f"{' ...' if len(unknown) > 8 else ''}; check the spelling, or pass --allow-new-classes to add them")
    rejected += [{"source": str(img.path), "class": "", "reason": "not inside a class folder"}
                 for img in new_images if not img.label]
    return _NewImages(len(new_images) + len(new_skipped), [img for img in new_images if img.label], unknown,
                      rejected)


def _open_output(out: Path, inputs: list, dest_root: Path, in_place: bool, overwrite: bool,
                 settings: dict) -> tuple[AdditionJournal, bool]:
    """The output folder (an earlier in-place merge's undo list is never replaced) and the addition journal;
    whether an interrupted run with the same settings is being resumed."""
    if in_place and (out / "merge_added.csv").is_file() and not marker_matches(out, "merge_data", settings):
        raise InputError(f"{out}: holds merge_added.csv, the undo list of an earlier in-place merge; "
                         f"choose another output folder so that it is kept")
    resuming = prepare_output_dir(out, inputs, overwrite=overwrite, tool="merge_data", settings=settings)
    journal = AdditionJournal(out / JOURNAL_NAME, out / "merge_added.csv", dest_root, tool="merge_data",
                              resume=resuming)
    return journal, resuming


@dataclass
class _Hashed:
    hashed: dedupe.HashedImages  # the reference images, then the new ones
    ref_idx: np.ndarray  # positions of the reference images in ``hashed``
    new_ok: list[DatasetImage]  # the readable new images
    new_idx: np.ndarray  # and their positions
    bad: dict  # path -> why it could not be read
    ref_skipped: int  # files of the reference folders that are not images
    seconds: float


def _hash(candidates: list[DatasetImage], reference_roots: list, already_added: set[str], workers: Optional[int],
          progress: Progress, strict: bool) -> _Hashed:
    """Hash what the training split (and the also_check folders) already hold, and the new images. Files an
    interrupted in-place run of this merge added are not reference: they would reject their own sources."""
    reference: list[DatasetImage] = []
    ref_skipped = []
    for root in reference_roots:
        found, skip = scan_dataset(root, splits=False)
        reference += [img for img in found if str(img.path.resolve()) not in already_added]
        ref_skipped += skip
    start = time.perf_counter()
    hashed = dedupe.hash_images([img.path for img in reference] + [img.path for img in candidates],
                                workers=workers, progress=progress, strict=strict)
    seconds = time.perf_counter() - start
    pos = {p: k for k, p in enumerate(hashed.paths)}
    new_ok = [img for img in candidates if img.path in pos]
    return _Hashed(hashed, np.array([pos[i.path] for i in reference if i.path in pos], dtype=np.int64), new_ok,
                   np.array([pos[i.path] for i in new_ok], dtype=np.int64), {s.path: s.reason for s in hashed.skipped},
                   len(ref_skipped), seconds)


def _duplicates_of_reference(h: _Hashed, threshold: int, exact_only: bool, workers: Optional[int]
                             ) -> dict[int, tuple[str, str, int, str]]:
    """New images that duplicate a reference image: new position -> (reason, duplicate_of, distance, kind), the
    closest reference image reported."""
    hashed, new_idx, ref_idx = h.hashed, h.new_idx, h.ref_idx
    verdict: dict[int, tuple[str, str, int, str]] = {}
    if not len(new_idx) or not len(ref_idx):
        return verdict
    if exact_only:
        ref_digest = {}
        for r in ref_idx:
            ref_digest.setdefault(hashed.digests[r], r)
        pairs = [(q, ref_digest[hashed.digests[n]], 0) for q, n in enumerate(new_idx)
                 if hashed.digests[n] in ref_digest]
    else:
        qi, rj, dd = dedupe.find_pairs(hashed.hashes[new_idx], threshold, other=hashed.hashes[ref_idx],
                                       workers=workers)
        pairs = list(zip(qi.tolist(), rj.tolist(), dd.tolist()))
    for q, r, d in sorted(pairs, key=lambda t: (t[0], t[2], t[1])):
        if q in verdict:
            continue  # the closest reference image is reported
        n, ref = new_idx[q], (ref_idx[r] if not exact_only else r)
        kind = "exact" if hashed.digests[n] == hashed.digests[ref] else "near"
        verdict[q] = ("duplicate of an existing image", str(hashed.paths[ref]), int(d), kind)
    return verdict


def _duplicates_among_new(h: _Hashed, rejected: set[int], threshold: int, exact_only: bool,
                          workers: Optional[int]) -> dict[int, tuple[str, str, int, str]]:
    """Duplicates among the new images not ``rejected`` already: the largest of each group is kept, the others
    reported against it (same shape as :func:`_duplicates_of_reference`)."""
    hashed = h.hashed
    remaining = [q for q in range(len(h.new_idx)) if q not in rejected]
    verdict: dict[int, tuple[str, str, int, str]] = {}
    if len(remaining) <= 1:
        return verdict
    sub = h.new_idx[remaining]
    if exact_only:
        ii, jj = dedupe._exact_pairs([hashed.digests[k] for k in sub])
    else:
        ii, jj, _ = dedupe.find_pairs(hashed.hashes[sub], threshold, workers=workers)
    for members in dedupe.connected_groups(len(sub), ii, jj):
        members = sorted(members, key=lambda m: (-int(np.prod(hashed.sizes[sub[m]])), m))
        keeper = sub[members[0]]
        for m in members[1:]:
            k = sub[m]
            kind = "exact" if hashed.digests[k] == hashed.digests[keeper] else "near"
            verdict[remaining[m]] = ("duplicate of another new image", str(hashed.paths[keeper]),
                                     dedupe.distance(hashed.hashes[k], hashed.hashes[keeper]), kind)
    return verdict


def _copy_train(train_images: list[DatasetImage], dest_root: Path, link: bool, resuming: bool,
                progress: Progress) -> int:
    """The existing training images into the merged split (a resumed run skips those already there)."""
    for img in track(train_images, total=len(train_images), desc="copying train", progress=progress):
        dst = output_path(dest_root, img.rel)
        if not (resuming and dst.is_file() and dst.stat().st_size == img.path.stat().st_size):
            copy_file(img.path, dst, link=link)
    return len(train_images)


def _add(accepted: list[DatasetImage], journal: AdditionJournal, dest_root: Path, taken: set, link: bool,
         progress: Progress) -> list[dict]:
    """Copy the accepted images into ``dest_root`` under names not ``taken`` (a taken one gets ``__new``), never
    replacing a file; each journalled as soon as it is in place. Returns the rows of merge_added.csv.

    Every destination is chosen and checked (no symlinked or file-blocked class folder on the way) before the
    first copy, so a refusal leaves the folder untouched. A failure during the copies (a full disk, Ctrl-C) still
    writes merge_added.csv with what was added, so ``--undo`` removes exactly that."""
    previous = journal.previous
    added: list[dict] = []
    plan: list[tuple[DatasetImage, Path]] = []
    for img in accepted:
        row = previous.get(str(img.path))
        if row is not None and Path(row["dest"]).is_file():  # an interrupted run already added it
            taken.add(str(Path(row["dest"]).resolve().relative_to(dest_root.resolve())).lower())
            added.append(row)
            continue
        dst_rel = unique_path(Path(img.rel), taken, tag="new")
        while (dest_root / dst_rel).exists():  # never replace a file, whatever its name
            dst_rel = unique_path(dst_rel, taken, tag="new")
        plan.append((img, output_path(dest_root, dst_rel, create=False)))  # refused here, before any write
    with journal:
        if plan:
            journal.start()  # the folder's marker naming merge_added.csv: what lets --undo delete there
        try:
            for img, dst in track(plan, total=len(plan), desc="adding", progress=progress):
                output_path(dest_root, dst.relative_to(dest_root))  # its folders; checked again as they are made
                copy_file(img.path, dst, link=link)
                row = {"source": str(img.path), "dest": str(dst.resolve()), "class": img.label,
                       "sha256": sha256_file(dst)}
                # The journal line is written as soon as the file is in place, so an interrupted in-place merge
                # still leaves a complete undo list (and a rerun knows what it already added).
                journal.add(row)
                added.append(row)
        except BaseException:
            if added:
                journal.finish(added)
                LOG.error("%d files were added to %s before this stopped; %s lists them (python "
                          "scripts/merge_data.py --undo %s removes them, or rerun to finish)", len(added), dest_root,
                          journal.added_csv, journal.added_csv)
            raise
        journal.finish(added)
    return added


def _report(out: Path, new_dir: Path, train_dir: Path, dest_root: Path, new: _NewImages, h: _Hashed,
            added: list[dict], copied_existing: int, in_place: bool, allow_new_classes: bool, threshold: int,
            exact_only: bool) -> dict:
    """merge_rejected.csv, ATTRIBUTION.csv (licences of downloaded images), merge_report.json; the summary."""
    from data_tools.attribution import find_manifests, write_attribution

    write_csv(out / "merge_rejected.csv", new.rejected, REJECTED_FIELDS)
    reasons: dict[str, int] = {}
    for r in new.rejected:
        key = r["reason"].split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    summary = {"new_dir": str(new_dir), "train_dir": str(train_dir), "output_dir": str(out),
               "merged_dir": str(dest_root), "in_place": in_place, "new_images": new.count,
               "added": len(added), "rejected": len(new.rejected), "rejected_by_reason": reasons,
               "new_classes": new.unknown if allow_new_classes else [], "existing_images": copied_existing or None,
               "threshold": threshold, "exact_only": exact_only, "hash_seconds": round(h.seconds, 2),
               "reference_unreadable": len(h.hashed.skipped) - sum(img.path in h.bad for img in new.candidates)
               + h.ref_skipped}
    summary["attribution"] = write_attribution(added, new_dir, dest_root) if find_manifests(new_dir) else None
    write_json(out / "merge_report.json", summary)
    finish_output_dir(out)
    return summary


def undo_merge(added_csv, progress: Progress = False) -> dict:
    """Delete the files a merge added (``merge_added.csv``): only inside the folder the merge recorded, each only
    if its SHA-256 is unchanged (``data_tools.manifest.undo_additions``)."""
    return undo_additions(added_csv, progress=progress)
