"""Single output files next to a user's files: never one of the inputs, never a file the tool did not write.

For tools that write a few named files into a folder the user may reuse (predict.py, export.py), as opposed to
the fresh output folders of the data tools (:mod:`ws_dan.common.outputs`):

* an output file is never one of the input files: paths are compared resolved (symlinks followed) and, where
  both exist, with ``os.path.samefile`` (same device and inode, so a hard link counts as the same file);
* an output folder is never inside (or equal to) an input folder that gets scanned: the next run would read
  this run's outputs (heatmap PNGs) as inputs;
* a file the tool would write, that exists and that the tool did not write, is kept unless the user says
  ``--overwrite``. What the tool wrote is listed in a small manifest in the folder (:data:`MANIFEST_NAME`), so
  rerunning into the same folder just works, and files of an earlier run that this run did not rewrite are
  removed rather than left to contradict the new ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ws_dan.common.io import InputError, PathLike, write_json
from ws_dan.common.outputs import is_within, real_path

MANIFEST_NAME = ".ws_dan_outputs.json"


class OutputError(InputError):
    """An output path that would replace an input, sit inside an input folder, or clobber a user's file."""


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file: equal resolved paths, or (both existing) the same inode."""
    if real_path(a) == real_path(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): different files
        return False


def check_not_an_input(output: PathLike, inputs: Iterable[PathLike], flag: str = "--output") -> None:
    """Refuse an output file that is one of ``inputs`` (writing it would destroy that input)."""
    for inp in inputs:
        if same_file(output, inp):
            raise OutputError(f"{output}: is the input file {inp}; writing it would replace the input "
                              f"(choose another {flag})")


def check_not_inside(output_dir: PathLike, input_dirs: Iterable[PathLike], flag: str = "--output-dir") -> None:
    """Refuse an output folder inside (or equal to) a scanned input folder: its outputs would become inputs."""
    for folder in input_dirs:
        if is_within(real_path(output_dir), real_path(folder)):
            raise OutputError(f"{output_dir}: the output folder is inside the input folder {folder}, so its files "
                              f"would be read as inputs on the next run; choose a {flag} outside it")


class OwnedOutputs:
    """The files a tool wrote in ``folder``, listed in ``folder/MANIFEST_NAME`` across runs.

    :meth:`check` before writing; :meth:`claim` each file just before writing it (the manifest is updated
    first, so an interrupted run still owns what it left); :meth:`finish` at the end.
    """

    def __init__(self, folder: PathLike, tool: str):
        self.folder = Path(folder)
        self.tool = tool
        self.path = self.folder / MANIFEST_NAME
        self.owned: set[str] = set(self._read())
        self.previous = set(self.owned)

    def _read(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(data, dict) or data.get("tool") != self.tool or not isinstance(data.get("files"), list):
            return []
        return [str(f) for f in data["files"]]

    def check(self, names: Sequence[str], overwrite: bool = False, sub_dirs: Sequence[str] = ()) -> None:
        """OutputError (unless ``overwrite``) for existing files among ``names``, or anywhere under ``sub_dirs``
        (folders whose files the tool writes, e.g. ``attention``), that the tool did not write."""
        if overwrite:
            return
        foreign = [n for n in names if (self.folder / n).exists() and n not in self.owned]
        for sub in sub_dirs:
            if (self.folder / sub).is_dir():
                rel = [p.relative_to(self.folder).as_posix() for p in sorted((self.folder / sub).rglob("*"))
                       if p.is_file() or p.is_symlink()]
                foreign += [r for r in rel if r not in self.owned]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputError(f"{self.folder}: holds {shown}, not written by {self.tool}; choose another output "
                              f"folder, or pass --overwrite to replace")

    def claim(self, name: str) -> Path:
        """Record ``name`` (a path relative to the folder, with /) as ours and return its full path."""
        if name not in self.owned:
            self.owned.add(name)
            self._write()
        return self.folder / name

    def finish(self, written: Iterable[str]) -> list[str]:
        """Delete the files of an earlier run that this run did not write; returns their names."""
        stale = sorted(self.previous - set(written))
        for name in stale:
            (self.folder / name).unlink(missing_ok=True)
            self.owned.discard(name)
        self._write()
        return stale

    def _write(self) -> None:
        write_json(self.path, {"tool": self.tool, "files": sorted(self.owned)})
