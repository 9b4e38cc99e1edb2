"""File I/O every part of the toolkit shares: the one atomic writer (for a file object, or a temporary path for
tools that write to a path themselves), CSV / JSON on top of it, file digests, and the error for bad input.

Standard library only, so that data-tool worker processes importing it start fast.
"""

from __future__ import annotations

import contextlib
import csv
import errno
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


class WriteError(InputError, OSError):
    """A file or folder the tool must write cannot be (a full disk, a read-only folder, a name too long...).

    One line: the path and the operating system's reason (``strerror``), e.g. ``out/dups.csv: cannot write: No
    space left on device``. Both an :class:`InputError` (scripts print it as their one ``error:`` line) and an
    ``OSError`` with the ``errno`` (code that handles a failed write, or tells ENOSPC from EROFS, still can).
    """

    def __init__(self, path: PathLike, reason: str, code: Optional[int] = None, action: str = "write"):
        super().__init__(code, reason, str(path))
        self.errno, self.strerror, self.filename, self.action = code, reason, str(path), action

    def __str__(self) -> str:
        return f"{self.filename}: cannot {self.action}: {self.strerror}"

    def __reduce__(self):  # worker processes pickle it: rebuild from the same four values
        return type(self), (self.filename, self.strerror, self.errno, self.action)


def os_error_message(e: OSError, path: Optional[PathLike] = None) -> str:
    """One line for an OSError: the path it names (or ``path``) and the operating system's reason."""
    if isinstance(e, WriteError):
        return str(e)
    where = e.filename if e.filename is not None else path
    reason = e.strerror or str(e)
    return f"{where}: {reason}" if where is not None else reason


def write_error(path: PathLike, e: OSError, action: str = "write") -> WriteError:
    """``e`` (raised writing ``path``) as a :class:`WriteError` naming ``path``; a WriteError is kept as it is."""
    if isinstance(e, WriteError):
        return e
    return WriteError(path, e.strerror or os.strerror(e.errno or 0) or str(e), e.errno, action)


def make_folder(path: PathLike, what: str = "the folder") -> Path:
    """``mkdir -p path``; a failure (read-only filesystem, no permission, no space, a file on the way) becomes a
    :class:`WriteError` naming ``path``: ``out: cannot create the folder: Read-only file system``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e, f"create {what}") from None
    return path


#: The longest final name (UTF-8 bytes) kept whole in a temporary name; a longer one is cut, so that the temporary
#: name (14 bytes longer) still fits the 255-byte limit of a file name wherever the final name fits.
TEMP_NAME_BYTES = 100


def free_temp_name(path: Path) -> Path:
    """An unused hidden name beside ``path``: "." + name + "." + 8 random characters + ".tmp", the pattern a
    resumed run recognises as a killed run's leftover (``ws_dan.common.run_dir.TEMP_FILE``). A name longer than
    :data:`TEMP_NAME_BYTES` bytes is cut to that length there (a 250-byte photo name still gets a temporary name)."""
    name = path.name
    if len(name.encode("utf-8", "surrogateescape")) > TEMP_NAME_BYTES:
        name = name.encode("utf-8", "surrogateescape")[:TEMP_NAME_BYTES].decode("utf-8", "ignore")
    while True:
        tmp = path.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
        if not os.path.lexists(tmp):
            return tmp


#: Failures of a write that are the disk's or the folder's, whatever the path an OSError names: they are always
#: reported as the output's (:class:`WriteError`).
DISK_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG", "ENAMETOOLONG")
                        if hasattr(errno, n))


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a tool that writes to a path itself (an exporter, a copy, a
    hard link); when the block succeeds the file there is renamed over ``path``, when it raises it is removed.

    So ``path`` never holds half a file: it keeps the old one or gets the whole new one. The temporary path is
    not created here: the tool creates the file, so it gets the permissions a direct write to ``path`` would give
    (a plain write 0o666 minus the umask, as :func:`atomic_write`; a copy or a link what it carries). The
    rename is atomic because the temporary name is in ``path``'s folder (created if missing).

    A write the disk or the folder refuses (full, read-only, a name too long, no permission) raises
    :class:`WriteError` naming ``path``, once the temporary file is removed; an OSError about another file (the
    source of a copy) is raised as it is."""
    path = Path(path)
    make_folder(path.parent)
    tmp = free_temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, (WriteError, FileExistsError)) and (
                e.errno in DISK_ERRNOS or e.filename is None or str(e.filename) in (str(tmp), str(path))):
            raise write_error(path, e) from None
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
