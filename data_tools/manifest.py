"""The one manifest / undo module: the moves (quarantine) and additions (in-place merge) a data tool makes in a
user's folders are recorded before they happen, and undone only inside the folders the tool recorded.

A manifest is a CSV (one row per file) plus a sidecar ``<manifest stem>.roots.json``, written atomically before
the first change, naming the folders the tool may act in: ``original`` (the data folders files were moved out
of), ``quarantine`` (where they went) or ``added`` (the folder files were added to). Undo trusts nothing else:

* the sidecar is only a pointer: files are moved back only out of a quarantine folder the tool made, which holds
  the tool's marker (:data:`QUARANTINE_MARKER`, written when the quarantine is made) naming that folder, this
  manifest and the data folders its files came from; only those data folders are restore destinations. A
  hand-written manifest and sidecar naming any other folder as the quarantine are refused in one line, before
  anything moves;
* a row whose paths fall outside those roots (an absolute path elsewhere, ``..``, a symlinked folder leading
  out) is refused with one line naming it; nothing of it is touched;
* a file is moved back only when its content is the recorded SHA-256 (a symlink: the recorded link text), and
  never over an existing file (``ws_dan.common.outputs.move_file``); undo restores byte for byte;
* undoing an addition deletes only a regular file inside ``added`` whose SHA-256 is the recorded one, and only when
  that folder holds the tool's marker (:data:`ADDITIONS_MARKER`, written there before the first file is added)
  naming this list: a hand-written list and sidecar naming another folder are refused in one line;
* a manifest that is not UTF-8 CSV text, or lacks a column, gives one :class:`~ws_dan.common.io.InputError` line;
* a quarantine and an undo lock the data folders (``ws_dan.common.outputs.folder_lock``): a second run moving
  files in the same folder is refused in one line naming the folder and the holder's pid.

Quarantine moves the path it reports (a symlink moves as a link, its target stays), never a file outside the
data folders, and never a file an image that stays links to (the kept copy of a duplicate group must survive).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from data_tools.parallel import Progress, track
from ws_dan.common.io import (
    InputError,
    PathLike,
    WriteError,
    make_folder,
    os_error_message,
    read_csv_rows,
    sha256_file,
    write_csv,
    write_json,
)
from ws_dan.common.outputs import folder_lock, is_within, move_file, output_path, real_path, unique_path

LOG = logging.getLogger(__name__)

#: Columns of a quarantine manifest (dedupe and clean); ``link`` holds a moved symlink's text ("" for a file).
MOVE_FIELDS = ("original", "quarantined", "sha256", "bytes", "group", "link")
#: Columns undo needs (manifests of earlier versions have no ``link``: all their rows are files).
MOVE_REQUIRED = ("original", "quarantined", "sha256")
#: Columns of an addition list (merge_added.csv).
ADDED_FIELDS = ("source", "dest", "class", "sha256")
#: Written inside a quarantine folder when a tool makes it: the folder itself, the manifests that moved files
#: into it and the data folders they came from. Undo moves files only out of a folder holding it.
QUARANTINE_MARKER = ".ws_dan_quarantine.json"
#: Written into a folder before a tool first adds a file to it (a hidden file, so no scan sees it): the addition
#: lists allowed to delete from that folder.
ADDITIONS_MARKER = ".ws_dan_added.json"


def roots_path(manifest_path: PathLike) -> Path:
    """The sidecar naming the folders a manifest may act in: ``<stem>.roots.json`` beside it."""
    manifest_path = Path(manifest_path)
    return manifest_path.with_name(f"{manifest_path.stem}.roots.json")


def write_roots(manifest_path: PathLike, tool: str, roots: dict[str, Sequence[PathLike]]) -> None:
    """Record (atomically) the folders ``manifest_path`` may act in, merged with those an earlier run recorded."""
    side = roots_path(manifest_path)
    merged = {k: [str(real_path(p)) for p in v] for k, v in roots.items()}
    try:
        old = json.loads(side.read_text(encoding="utf-8")).get("roots", {})
    except (OSError, ValueError, AttributeError):
        old = {}
    for key, paths in old.items() if isinstance(old, dict) else ():
        if isinstance(paths, list):
            merged[key] = list(dict.fromkeys(merged.get(key, []) + [str(p) for p in paths]))
    write_json(side, {"tool": tool, "manifest": Path(manifest_path).name, "roots": merged})


def read_roots(manifest_path: PathLike, what: str) -> dict[str, list[Path]]:
    """The recorded roots of ``manifest_path``; :class:`InputError` when there is no readable record."""
    side = roots_path(manifest_path)
    try:
        roots = json.loads(side.read_text(encoding="utf-8"))["roots"]
        return {str(k): [Path(p) for p in v] for k, v in roots.items()}
    except FileNotFoundError:
        raise InputError(f"{manifest_path}: no {side.name} beside it (the folders the tool recorded when it wrote "
                         f"this {what}); undo acts only inside recorded folders") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{side}: expected the JSON record of the folders {manifest_path} may act in") from None


def read_manifest(path: PathLike, required: Sequence[str], what: str) -> list[dict]:
    """The rows of a manifest CSV; one :class:`InputError` line for a missing, binary, non-UTF-8 or wrong file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: expected {what}, found "
                         f"{'nothing (the path does not exist)' if not os.path.lexists(path) else 'no file'}")
    try:
        rows = read_csv_rows(path)
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except UnicodeDecodeError:
        raise InputError(f"{path}: expected {what} (UTF-8 CSV text), found binary or non-UTF-8 data") from None
    except csv.Error as e:
        raise InputError(f"{path}: expected {what}, found a file that is not CSV ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: not {what} (missing column(s) {', '.join(missing)}; expected "
                         f"{', '.join(required)})")
    return rows


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    # Every folder on the way resolved (a symlinked folder cannot lead out); the last part is the entry itself.
    if not path.is_absolute() or ".." in path.parts:
        return False
    real = real_path(path.parent) / path.name
    return any(is_within(real, real_path(r)) for r in roots)


def _is_same(path: Path, row: dict) -> bool:
    """Whether ``path`` holds what ``row`` recorded: the same link text, or a regular file with that SHA-256."""
    link = row.get("link") or ""
    if link:
        return path.is_symlink() and os.readlink(path) == link
    try:
        return not path.is_symlink() and path.is_file() and sha256_file(path) == row["sha256"]
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Quarantine: moves out of the data folders, and back


def read_quarantine_marker(quarantine_dir: PathLike) -> Optional[dict]:
    """The tool's marker in ``quarantine_dir`` (a regular file, not a link), or None."""
    marker = Path(quarantine_dir) / QUARANTINE_MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(data, dict) and isinstance(data.get("quarantine"), str)
          and all(isinstance(data.get(k), list) for k in ("manifests", "data_roots")))
    return data if ok else None


def claim_quarantine(quarantine_dir: PathLike, data_roots: Sequence[PathLike], manifest_path: PathLike,
                     tool: str) -> None:
    """Make ``quarantine_dir`` (or take up the one an earlier run of this manifest made) and record in its marker
    this manifest and ``data_roots``. Refused: a folder that exists, holds other files and no marker (the
    user's folder, not a quarantine)."""
    qdir = Path(quarantine_dir)
    record = read_quarantine_marker(qdir)
    if record is None or record["quarantine"] != str(real_path(qdir)):
        if qdir.exists() and not qdir.is_dir():
            raise InputError(f"{qdir}: expected a quarantine folder, found a file")
        if qdir.is_dir() and any(qdir.iterdir()):
            raise InputError(f"{qdir}: expected a new or empty quarantine folder (or one this tool made, holding "
                             f"{QUARANTINE_MARKER}); it holds other files: choose another folder")
        record = {"tool": tool, "quarantine": str(real_path(qdir)), "manifests": [], "data_roots": []}
    record["manifests"] = list(dict.fromkeys([*map(str, record["manifests"]), str(real_path(manifest_path))]))
    record["data_roots"] = list(dict.fromkeys([*map(str, record["data_roots"]),
                                               *(str(real_path(r)) for r in data_roots)]))
    make_folder(qdir, "the quarantine folder")
    write_json(qdir / QUARANTINE_MARKER, record)


def trusted_move_roots(manifest_path: PathLike, roots: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """The folders an undo of ``manifest_path`` may act in: the recorded quarantine folders, each verified by its
    marker (made by the tool, for this manifest), and the data folders those markers name (not the sidecar's).

    :class:`InputError` (one line, nothing moved) for a recorded quarantine folder that is not such a folder: a
    hand-written sidecar naming any other folder as the quarantine."""
    quarantines = roots.get("quarantine", [])
    if not quarantines:
        raise InputError(f"{roots_path(manifest_path)}: names no quarantine folder; expected the record a "
                         f"quarantine writes beside {Path(manifest_path).name}")
    me, originals = str(real_path(manifest_path)), []
    for qdir in quarantines:
        record = read_quarantine_marker(qdir)
        if record is None or record["quarantine"] != str(real_path(qdir)) or me not in record["manifests"]:
            raise InputError(f"{qdir}: not a quarantine folder this tool made for {manifest_path} (no "
                             f"{QUARANTINE_MARKER} in it naming that manifest); undo moves files only out of "
                             f"the tool's own quarantine folders")
        originals += [Path(p) for p in record["data_roots"]]
    return {"original": list(dict.fromkeys(originals)), "quarantine": list(quarantines)}



def quarantine_files(moves: Sequence[tuple[PathLike, PathLike, dict]], data_roots: Sequence[PathLike],
                     quarantine_dir: PathLike, manifest_path: PathLike, fields: Sequence[str] = MOVE_FIELDS,
                     keep: Iterable[PathLike] = (), tool: str = "", progress: Progress = False) -> dict:
    """Move each ``(path, path relative to quarantine_dir, extra columns)`` of ``moves`` into ``quarantine_dir``.

    The data folders are locked for the whole call (``folder_lock``; a caller that planned the moves from a scan
    should hold the lock from before the scan). The quarantine folder's marker, the roots and the manifest
    (absolute paths, SHA-256, size, link text) are written before anything moves, and rows of an earlier run are
    kept, so :func:`undo_moves` can restore everything even after a crash half-way. Never replaces a file. Left
    where they are (and counted): a path outside ``data_roots``, a regular file that a path of ``keep`` (the
    images that stay) resolves to, and a path that is gone since it was planned. Returns the counts and paths.
    """
    qdir = Path(os.path.abspath(quarantine_dir))
    manifest_path = Path(manifest_path)
    data_roots = [Path(os.path.abspath(r)) for r in data_roots]
    with folder_lock(data_roots, tool):
        kept_targets = {real_path(k) for k in keep}
        old_rows = (read_manifest(manifest_path, MOVE_REQUIRED, "a quarantine manifest")
                    if manifest_path.is_file() else [])
        # Rows of an interrupted run whose file never moved are planned again below; drop the stale ones.
        old_rows = [r for r in old_rows
                    if os.path.lexists(r["quarantined"]) or not os.path.lexists(r["original"])]
        taken = {str(Path(r["quarantined"])).lower() for r in old_rows}
        plan, refused = [], []
        for src, rel, extra in moves:
            src = Path(os.path.abspath(src))  # not resolved: a symlink is moved as the link
            if not _inside(src, data_roots):
                refused.append(f"{src}: outside the data folder(s) {', '.join(map(str, data_roots))}; not moved")
                continue
            if not os.path.lexists(src):
                refused.append(f"{src}: gone since it was found (moved or deleted meanwhile); not moved")
                continue
            if not src.is_symlink() and real_path(src) in kept_targets:
                refused.append(f"{src}: an image that stays links to it; not moved")
                continue
            try:
                link = os.readlink(src) if src.is_symlink() else ""
                digest, size = sha256_file(src), src.stat().st_size
            except OSError as e:
                refused.append(f"{src}: cannot read it ({e.strerror or e}); not moved")
                continue
            dst = unique_path(qdir / rel, taken)
            while os.path.lexists(dst):  # left from an earlier run that the manifest does not know about
                dst = unique_path(dst, taken, tag="q")
            plan.append({**extra, "original": str(src), "quarantined": str(dst), "sha256": digest, "bytes": size,
                         "link": link})
        for line in refused:
            LOG.warning(line)
        claim_quarantine(qdir, data_roots, manifest_path, tool)
        write_roots(manifest_path, tool, {"original": data_roots, "quarantine": [qdir]})
        write_csv(manifest_path, old_rows + plan, list(fields))
        moved, gone = 0, 0
        for row in track(plan, total=len(plan), desc="quarantine", progress=progress):
            dst = output_path(qdir, Path(row["quarantined"]).relative_to(qdir))
            try:
                move_file(row["original"], dst)
            except FileNotFoundError:  # removed between the plan and its move; undo counts it as missing
                LOG.warning("%s: gone before it could be moved; not moved", row["original"])
                gone += 1
                continue
            moved += 1
    return {"moved": moved, "not_moved": len(refused) + gone, "manifest": str(manifest_path),
            "quarantine_dir": str(qdir)}


def undo_moves(manifest_path: PathLike, progress: Progress = False) -> dict:
    """Move every quarantined file of ``manifest_path`` back to where it was (see the module docstring).

    Only out of a quarantine folder the tool made for this manifest, into the data folders its marker names
    (:func:`trusted_move_roots`); those data folders are locked meanwhile. Safe to run twice and after an
    interrupted quarantine: a file already back in place is counted, not moved; a quarantined file whose content
    changed, or whose original place is taken, is left where it is; a row outside the trusted folders is refused.
    Each such row gets one warning line, also returned in ``problems``.
    """
    what = "a quarantine manifest CSV written by dedupe.py or clean_images.py"
    rows = read_manifest(manifest_path, MOVE_REQUIRED, what)
    roots = trusted_move_roots(manifest_path, read_roots(manifest_path, "quarantine manifest"))
    counts = {"restored": 0, "already_in_place": 0, "missing": 0, "changed": 0, "blocked": 0, "refused": 0}
    problems = []
    with folder_lock([r for r in roots["original"] if r.is_dir()], "undo"):
        for n, row in track(list(reversed(list(enumerate(rows, 2)))), total=len(rows), desc="undo",
                            progress=progress):
            if not all(row.get(k) for k in MOVE_REQUIRED):
                counts["refused"] += 1
                problems.append(f"{manifest_path}: line {n}: missing original, quarantined or sha256; row refused")
                continue
            original, moved = Path(row["original"]), Path(row["quarantined"])
            if not _inside(original, roots["original"]) or not _inside(moved, roots["quarantine"]):
                counts["refused"] += 1
                problems.append(f"{manifest_path}: line {n}: {moved} -> {original}: outside the quarantine and "
                                f"data folders the manifest recorded; row refused")
                continue
            if os.path.lexists(original):
                if _is_same(original, row):
                    counts["already_in_place"] += 1
                else:
                    counts["blocked"] += 1
                    problems.append(f"{original}: another file is in the way; {moved} left in quarantine")
                continue
            if not os.path.lexists(moved):
                counts["missing"] += 1
                problems.append(f"{moved}: missing from the quarantine folder (and not back at {original})")
                continue
            if not _is_same(moved, row):
                counts["changed"] += 1
                problems.append(f"{moved}: content changed since it was quarantined; left where it is")
                continue
            try:
                move_file(moved, original)
            except FileExistsError:  # appeared since the check above
                counts["blocked"] += 1
                problems.append(f"{original}: another file is in the way; {moved} left in quarantine")
                continue
            counts["restored"] += 1
    for p in problems:
        LOG.warning(p)
    return {**counts, "problems": problems}


# ---------------------------------------------------------------------------------------------------------------
# Additions: files a tool copied into a user's folder, and their removal


class AdditionJournal:
    """The list of files added to ``added_root``, one CSV line appended (and flushed) per file as it lands.

    An interrupted run thus leaves a complete undo list. :meth:`finish` replaces the journal by the final list
    ``added_csv``. The roots sidecar of ``added_csv`` is written when the journal is made, before any addition;
    the journal file itself is opened at the first addition.
    """

    def __init__(self, journal_path: PathLike, added_csv: PathLike, added_root: PathLike, tool: str,
                 resume: bool = False):
        self.path, self.added_csv, self.root = Path(journal_path), Path(added_csv), Path(added_root)
        # A resumed run knows what it added from the journal, or from the list an interrupted run finished early.
        self.previous = {**read_journal(self.added_csv), **read_journal(self.path)} if resume else {}
        if not resume:
            self.path.unlink(missing_ok=True)
        write_roots(self.added_csv, tool, {"added": [self.root]})
        self._file = None
        self._writer = None

    def start(self) -> None:
        """Before the first addition: the marker in the added folder naming this list (:func:`mark_additions`)."""
        mark_additions(self.root, self.added_csv)

    def add(self, row: dict) -> None:
        """Record one added file (its row has :data:`ADDED_FIELDS`) as soon as it is in place."""
        if self._file is None:
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=ADDED_FIELDS)
            if self._file.tell() == 0:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self, rows: Sequence[dict]) -> None:
        """Write the final list (atomically) and remove the journal."""
        self.close()
        write_csv(self.added_csv, rows, ADDED_FIELDS)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> AdditionJournal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_journal(path: PathLike) -> dict:
    """Rows (by source path) that an interrupted run recorded as added; a torn last line is ignored."""
    path = Path(path)
    if not path.is_file():
        return {}
    rows = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if all(row.get(k) for k in ADDED_FIELDS) and len(row["sha256"]) == 64:
                    rows[row["source"]] = row
    except (UnicodeDecodeError, csv.Error):
        pass  # a torn or damaged line: what was read before it stands
    return rows


def _list_id(added_csv: PathLike) -> str:
    # How a marker names an addition list: its path with every folder on the way resolved.
    return str(real_path(Path(added_csv).parent) / Path(added_csv).name)


def _write_additions_marker(folder: Path, lists: list[str]) -> None:
    marker = Path(folder) / ADDITIONS_MARKER
    if lists:
        write_json(marker, {"tool": "ws_dan", "lists": lists})
    else:
        marker.unlink(missing_ok=True)


def _additions_marker(folder: Path) -> list[str]:
    marker = Path(folder) / ADDITIONS_MARKER
    if marker.is_symlink() or not marker.is_file():
        return []
    try:
        lists = json.loads(marker.read_text(encoding="utf-8")).get("lists", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [str(x) for x in lists] if isinstance(lists, list) else []


def mark_additions(folder: PathLike, added_csv: PathLike) -> None:
    """Record in ``folder``'s :data:`ADDITIONS_MARKER` that ``added_csv`` lists files added to it (kept with the
    lists earlier runs recorded there); :func:`undo_additions` deletes only from folders whose marker names it."""
    folder = Path(folder)
    make_folder(folder)
    lists = _additions_marker(folder)
    if _list_id(added_csv) not in lists:
        _write_additions_marker(folder, lists + [_list_id(added_csv)])


def undo_additions(added_csv: PathLike, progress: Progress = False) -> dict:
    """Delete the files a merge added (``merge_added.csv``): only regular files inside the recorded folder whose
    SHA-256 is the recorded one. Rows outside it are refused, one warning line each."""
    rows = read_manifest(added_csv, ADDED_FIELDS, "the merge_added.csv written by merge_data.py")
    roots = read_roots(added_csv, "addition list").get("added", [])
    me = _list_id(added_csv)
    for root in roots:  # the sidecar is only a pointer: the folder itself must say this list added to it
        if me not in _additions_marker(root):
            raise InputError(f"{added_csv}: {root} was not added to by this list (no {ADDITIONS_MARKER} there "
                             f"naming it); undo deletes files only from a folder the tool recorded adding to")
    counts = {"removed": 0, "already_gone": 0, "changed": 0, "refused": 0}
    problems = []
    with folder_lock([r for r in roots if r.is_dir()], "undo"):
        for n, row in track(list(enumerate(rows, 2)), total=len(rows), desc="undo", progress=progress):
            dest = Path(row.get("dest") or "")
            if not row.get("dest") or not row.get("sha256") or not _inside(dest, roots):
                counts["refused"] += 1
                problems.append(f"{row.get('dest') or f'{added_csv}: line {n}'}: not a file the merge added inside "
                                f"{', '.join(map(str, roots))}; row refused")
                continue
            if not os.path.lexists(dest):
                counts["already_gone"] += 1
            elif not _is_same(dest, {"sha256": row["sha256"]}):
                counts["changed"] += 1
                problems.append(f"{dest}: changed since it was added (or not a plain file); left in place")
            else:
                try:
                    dest.unlink()
                except OSError as e:
                    raise WriteError(dest, e.strerror or str(e), e.errno, "remove it") from None
                counts["removed"] += 1
        if not problems:  # all undone: the folder no longer holds this list's files, nor its marker entry
            for root in roots:
                _write_additions_marker(root, [x for x in _additions_marker(root) if x != me])
    for p in problems:
        LOG.warning(p)
    return {**counts, "problems": problems}


def run_undo(undo: Callable[..., dict], manifest_path: PathLike, progress: Progress = False,
             not_with: Optional[Mapping[str, Any]] = None, left: str = "could not be restored") -> dict:
    """The ``--undo MANIFEST`` entry every undoable data tool's script shares; returns ``undo``'s counts.

    ``undo`` (:func:`undo_moves`, :func:`undo_additions` or a tool's wrapper of them) is called as
    ``undo(manifest_path, progress=progress)``. A flag of ``not_with`` (flag -> its value) that is set, a bad
    manifest (InputError), or files the undo could not act on (``left`` says what became of them) end the script
    with one ``error:`` line (exit status 2, or 1 for the files: see the warnings logged for each); otherwise the
    counts are printed as a table.
    """
    from ws_dan.common.runtime import fail
    from ws_dan.common.tables import format_table

    if not_with and any(not_with.values()):
        fail(f"--undo MANIFEST takes no {' / '.join(not_with)}")
    try:
        counts = undo(manifest_path, progress=progress)
    except InputError as e:  # also a write the disk refused (WriteError), or a folder locked by another run
        fail(str(e))
    except OSError as e:
        fail(os_error_message(e, manifest_path))
    print(format_table([[k, v] for k, v in counts.items() if k != "problems"], ["undo", "files"]))
    if counts["problems"]:
        fail(f"{len(counts['problems'])} file(s) {left}; see the warnings above", code=1)
    return counts
