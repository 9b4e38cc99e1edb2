"""File I/O every part of the toolkit shares: the one atomic writer, CSV / JSON on top of it, file digests, and
the error for bad input.

Standard library only, so that data-tool worker processes importing it start fast.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Optional, Union

#: What every public function here takes for a path.
PathLike = Union[str, os.PathLike]


class InputError(ValueError):
    """A problem with the user's input or folders; the message names the path (or value) and what was expected.

    Scripts turn it into one ``error:`` line (``ws_dan.common.runtime.fail``). Every package raises this one class,
    so an error from a base-layer helper (the output-folder rules, the dataset scanner) is caught wherever a data
    tool's error is.
    """


def new_file_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give (0o666 minus the umask); mkstemp uses 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it over ``path`` only if the block succeeds.

    The data reach the disk (fsync) before the rename, so a crash leaves the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: PathLike, obj: Any) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")


def write_csv(path: PathLike, rows: Sequence[dict], fieldnames: Optional[Sequence[str]] = None) -> None:
    """Rows as CSV, atomically. The columns: ``fieldnames``, or every key of the rows in order of first appearance
    (a resumed run's old rows may lack a column that later versions write; their cells stay empty)."""
    fieldnames = list(fieldnames or dict.fromkeys(k for row in rows for k in row))
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def read_csv_rows(path: PathLike) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (a symlink is followed: the digest is of what it points to)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
