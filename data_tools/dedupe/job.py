"""The whole duplicate-finding job, as ``scripts/dedupe.py`` runs it: search, reports, then the chosen action."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from data_tools.dedupe.actions import copy_unique, quarantine
from data_tools.dedupe.groups import DuplicateReport, duplicates_contact_sheet, find_duplicates, find_leaks
from data_tools.dedupe.neighbours import DEFAULT_THRESHOLD, check_threshold
from data_tools.parallel import Progress
from ws_dan.common.dataset_folders import skipped_rows
from ws_dan.common.io import InputError, write_csv, write_json
from ws_dan.common.outputs import finish_output_dir, folder_lock, prepare_output_dir

ACTIONS = ("report", "copy-unique", "quarantine")
DUPLICATE_FIELDS = ("group", "role", "kind", "distance", "path", "side", "split", "label", "width", "height",
                    "label_conflict")


def run_dedupe(output_dir, data_dir=None, reference_dir=None, query_dir=None, threshold: int = DEFAULT_THRESHOLD,
               action: str = "report", link: bool = False, exact_only: bool = False, contact_groups: int = 20,
               workers: Optional[int] = None, progress: Progress = False, strict: bool = False,
               overwrite: bool = False) -> tuple[DuplicateReport, dict]:
    """Find duplicates in ``data_dir`` (or query images duplicating reference images) and write the outputs.

    ``output_dir`` receives ``duplicates.csv`` (a row per image in a group, keeper first), ``label_conflicts.csv``,
    ``skipped.csv``, ``contact_sheet.png`` (first ``contact_groups`` groups) and ``dedupe_report.json``. Action
    ``copy-unique`` adds ``unique/`` (the images to keep); ``quarantine`` moves the duplicates into
    ``quarantine/`` and writes ``quarantine_manifest.csv`` for ``undo_quarantine``; its scanned folders are
    locked from the scan on (a second quarantine of them is refused in one line naming the holder's pid).
    Returns the report and the summary.
    """
    if action not in ACTIONS:
        raise InputError(f"--action {action}: expected one of {', '.join(ACTIONS)}")
    check_threshold(threshold)
    if data_dir is not None and (reference_dir is not None or query_dir is not None):
        raise InputError("give either --data-dir, or --reference and --query, not both")
    if data_dir is None and (reference_dir is None or query_dir is None):
        raise InputError("expected --data-dir DIR, or both --reference DIR and --query DIR")
    inputs = [data_dir] if data_dir is not None else [reference_dir, query_dir]
    for d in inputs:
        if not Path(d).is_dir():
            raise InputError(f"{d}: expected a folder of images, found "
                                f"{'nothing (the path does not exist)' if not Path(d).exists() else 'a file'}")
    out = Path(output_dir)
    # A quarantine moves files the search found: no other run may move files there from the scan on.
    with folder_lock(inputs if action == "quarantine" else [], tool="dedupe --action quarantine"):
        return _run(out, inputs, data_dir, reference_dir, query_dir, threshold, action, link, exact_only,
                    contact_groups, workers, progress, strict, overwrite)


def _run(out: Path, inputs: list, data_dir, reference_dir, query_dir, threshold: int, action: str, link: bool,
         exact_only: bool, contact_groups: int, workers: Optional[int], progress: Progress, strict: bool,
         overwrite: bool) -> tuple[DuplicateReport, dict]:
    settings = {"inputs": [str(Path(d).resolve()) for d in inputs], "threshold": threshold, "action": action,
                "exact_only": exact_only}
    resuming = prepare_output_dir(out, inputs, overwrite=overwrite, tool="dedupe", settings=settings)
    if data_dir is not None:
        report = find_duplicates(data_dir, threshold=threshold, workers=workers, progress=progress, strict=strict,
                                 exact_only=exact_only)
    else:
        report = find_leaks(reference_dir, query_dir, threshold=threshold, workers=workers, progress=progress,
                            strict=strict, exact_only=exact_only)
    if not report.images:
        raise InputError(f"{', '.join(map(str, inputs))}: no readable images found")
    write_csv(out / "duplicates.csv", report.rows(), DUPLICATE_FIELDS)
    write_csv(out / "label_conflicts.csv", report.conflict_rows(), DUPLICATE_FIELDS)
    write_csv(out / "skipped.csv", skipped_rows(report.skipped), ["path", "reason"])
    sheet = None
    if contact_groups > 0:
        sheet = duplicates_contact_sheet(report, out / "contact_sheet.png", max_groups=contact_groups)
    summary = report.summary()
    summary.update(action=action, output_dir=str(out), contact_sheet=str(sheet) if sheet else None)
    if action == "copy-unique":
        summary["unique_dir"] = str(out / "unique")
        summary["copy"] = copy_unique(report, out / "unique", link=link, progress=progress, resume=resuming)
    elif action == "quarantine":
        summary["quarantine"] = quarantine(report, out / "quarantine", out / "quarantine_manifest.csv",
                                            progress, data_roots=inputs)
    write_json(out / "dedupe_report.json", summary)
    finish_output_dir(out)
    return report, summary
