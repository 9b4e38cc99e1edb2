"""File I/O every part of the toolkit shares: the one atomic writer (for a file object, or a temporary path for
tools that write to a path themselves), CSV / JSON on top of it, file digests, and the error for bad input.

Standard library only, so that data-tool worker processes importing it start fast.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import secrets
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


def free_temp_name(path: Path) -> Path:
    """An unused hidden name beside ``path``: "." + name + "." + 8 random characters + ".tmp", the pattern a
    resumed run recognises as a killed run's leftover (``ws_dan.common.run_dir.TEMP_FILE``)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        if not os.path.lexists(tmp):
            return tmp


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a tool that writes to a path itself (an exporter, a copy, a
    hard link); when the block succeeds the file there is renamed over ``path``, when it raises it is removed.

    So ``path`` never holds half a file: it keeps the old one or gets the whole new one. The temporary path is
    not created here: the tool creates the file, so it gets the permissions a direct write to ``path`` would give
    (a plain write 0o666 minus the umask, as :func:`atomic_write`; a copy or a link what it carries). The
    rename is atomic because the temporary name is in ``path``'s folder (created if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = free_temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: How :func:`atomic_write` creates its temporary file: new (never an existing name or a link), read-write, as
#: mkstemp does, but with the permissions of a plain ``open(path, "w")``.
_NEW_FILE_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it over ``path`` only if the block succeeds
    (:func:`atomic_path`).

    The data reach the disk (fsync) before the rename, so a crash leaves the old file or the whole new one."""
    with atomic_path(path) as tmp:
        with os.fdopen(os.open(tmp, _NEW_FILE_FLAGS, 0o666), mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


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
