"""The save folder of a training run: what a run writes there, and the checks made before it writes anything.

A run owns a fixed set of names in its folder (:data:`RUN_FILES`, ``epoch_NNN.pt``, and the hidden temporary
files of :func:`ws_dan.common.io.atomic_write` beside them). :func:`prepare_run_dir` is called once, before the first
byte is written, and refuses (:class:`RunDirError`, one line) when

* the folder already holds a run and this one neither resumes it (``-c``) nor replaces it (``--overwrite``):
  two runs' epochs would mix in one metrics.csv and best.pt could come from either;
* the folder is, contains, or lies inside a data folder (symlinks resolved): DATA/train/run1 would turn the
  run's files into a class folder of the dataset, and every later run on DATA would fail;
* the folder (or a parent) is an existing file.

With ``overwrite`` it then removes the old run's files -- only those names, never anything else -- and it
always removes stale temporary files that a killed run (SIGKILL, power loss) left behind.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional

from ws_dan.common.io import InputError, PathLike, make_folder
from ws_dan.common.outputs import is_within, real_path

log = logging.getLogger(__name__)

#: Files every training run writes into its folder (besides epoch_NNN.pt).
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "curves.png", "args.json", "train.log", "report.html")
#: Their presence means the folder already holds a run (train.log alone does not: a run that failed in setup).
RUN_MARKERS = ("last.pt", "best.pt", "metrics.csv")
EPOCH_FILE = re.compile(r"^epoch_\d{3,}\.pt$")
#: The atomic writers' temporary names (``ws_dan.common.io.free_temp_name``): "." + final name + "." + 8 random
#: characters + ".tmp"; older versions also left "." + final name + ".tmp".
TEMP_FILE = re.compile(r"^\.(?P<name>.+?)\.(?:[A-Za-z0-9_]{8}\.)?tmp$")


class RunDirError(InputError):
    """A save folder that cannot take this run; the message is the one line to show the user."""


def _is_run_file(name: str, extra: Sequence[str]) -> bool:
    return name in RUN_FILES or name in extra or bool(EPOCH_FILE.match(name))


def existing_run_files(save_dir: PathLike, extra: Sequence[str] = ()) -> list[Path]:
    """The files of a previous run in ``save_dir`` (sorted; empty when there is none or no folder)."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    return sorted(p for p in save_dir.iterdir() if p.is_file() and _is_run_file(p.name, extra))


def stale_temp_files(save_dir: PathLike, extra: Sequence[str] = ()) -> list[Path]:
    """Hidden temporary files of run outputs (``.last.pt.ab12cd34.tmp``) left by a killed run."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    found = []
    for p in save_dir.iterdir():
        m = TEMP_FILE.match(p.name)
        if m and p.is_file() and _is_run_file(m.group("name"), extra):
            found.append(p)
    return sorted(found)


def check_run_dir(save_dir: PathLike, data_dirs: Iterable[Optional[PathLike]] = (), resume: bool = False,
                  overwrite: bool = False, extra: Sequence[str] = ()) -> Path:
    """Raise :class:`RunDirError` when ``save_dir`` cannot take a new run (see the module docstring).

    Writes nothing. ``data_dirs``: folders the run reads (None entries are ignored); ``resume``: the run
    continues from a checkpoint (``-c``), so a previous run in the folder is expected; ``extra``: more file
    names the caller writes there (they count as the run's own for --overwrite)."""
    save_dir = Path(save_dir)
    for ancestor in [save_dir, *save_dir.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                where = "is a file" if ancestor == save_dir else f"lies under {ancestor}, which is a file"
                raise RunDirError(f"--save-dir {save_dir}: {where}; expected a folder (new, or holding a previous "
                                  "run)")
            break
    save = real_path(save_dir)
    for data_dir in data_dirs:
        if data_dir is None:
            continue
        data = real_path(data_dir)
        if save == data:
            raise RunDirError(f"--save-dir {save_dir} is the data folder {data_dir} itself; the run's files would "
                              "mix with the images: choose a save folder outside the data")
        if is_within(save, data):
            raise RunDirError(f"--save-dir {save_dir} is inside the data folder {data_dir}; the run's files would "
                              "become part of the dataset: choose a save folder outside the data")
        if is_within(data, save):
            raise RunDirError(f"the data folder {data_dir} is inside --save-dir {save_dir}; a run folder must not "
                              "hold the data it trains on: choose another save folder")
    if not resume and not overwrite:
        found = [p for p in existing_run_files(save_dir, extra)
                 if p.name in RUN_MARKERS or EPOCH_FILE.match(p.name)]
        if found:
            names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
            raise RunDirError(f"--save-dir {save_dir} already holds a training run ({names}): resume it with "
                              f"-c {save_dir / 'last.pt'}, or start over with --overwrite (removes that run's files)")
    return save_dir


def prepare_run_dir(save_dir: PathLike, data_dirs: Iterable[Optional[PathLike]] = (), resume: bool = False,
                    overwrite: bool = False, extra: Sequence[str] = ()) -> Path:
    """:func:`check_run_dir`, then create the folder, remove stale temporary files and, with ``overwrite``
    (and no ``resume``), the previous run's files. Returns the folder."""
    save_dir = check_run_dir(save_dir, data_dirs, resume, overwrite, extra)
    make_folder(save_dir, "the save folder")  # read-only, full...: one line (WriteError) naming it
    for p in stale_temp_files(save_dir, extra):
        log.info("removing %s (a temporary file left by an interrupted run)", p)
        p.unlink(missing_ok=True)
    if overwrite and not resume:
        old = existing_run_files(save_dir, extra)
        if old:
            log.info("--overwrite: removing the previous run's %d file(s) from %s", len(old), save_dir)
        for p in old:
            p.unlink(missing_ok=True)
    return save_dir
