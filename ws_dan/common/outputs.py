"""Where a tool may write, and how: output-folder safety and the safe copy / link / move of single files.

The rules every tool that writes a folder follows (the data tools and ``scripts/super_resolve.py`` alike), so
that none of them can damage a user's data by accident, whatever links the folders hold:

* An output folder inside an input folder is refused (the tool would read its own output on the next run, or
  copy a dataset into itself), and so is an input folder inside the output folder (``--overwrite`` would then
  write over the input); links are resolved first (:func:`check_not_nested`).
* Outputs go to a folder that is new or empty (:func:`prepare_output_dir`). A run that stops half-way leaves a
  marker file (:data:`MARKER_NAME`); the same tool with the same settings may then write into that folder again
  without ``--overwrite`` and finish the job.
* A file is written only where its folder really lies inside the output root: a symlinked folder met on the way
  (``out/A -> /elsewhere``) is refused instead of followed (:func:`output_path`).
* Every file appears under its final name only once complete: it is written under a hidden temporary name in the
  same folder and renamed (``ws_dan.common.io.atomic_path`` / ``atomic_write``). Ctrl-C leaves complete files and, at
  worst, a hidden ``.*.tmp`` file, which a resumed run removes.
* Links are never followed to write, and never copied as links: :func:`copy_file` copies (or hard-links) the
  file a symlink points to, so ``--link`` never makes a dangling link; :func:`move_file` moves the path itself
  (a symlink moves as a link, its target stays) and never replaces anything.
* A folder whose files a tool moves (a quarantine, its undo) is locked for the whole run (:func:`folder_lock`):
  a second run on it is refused in one line naming the folder and the holder's pid, instead of finding its
  files gone half-way.
* A write the disk or the folder refuses (full, read-only, a name too long) is one line naming the path and the
  system's reason (``ws_dan.common.io.WriteError``), never a traceback, and leaves no temporary file behind.

Standard library only, so worker processes that import it start fast.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

from ws_dan.common.io import InputError, PathLike, atomic_path, free_temp_name, make_folder, write_error, write_json

try:  # POSIX: the lock is an flock on the lock file, which the kernel drops when its process dies
    import fcntl
except ImportError:  # pragma: no cover (Windows: the lock is the file itself, created O_EXCL)
    fcntl = None  # type: ignore[assignment]

#: Left in an output folder while a tool runs; present after a crash or Ctrl-C, removed when the job completes.
MARKER_NAME = ".incomplete.json"


# ---------------------------------------------------------------------------------------------------------------
# Output folders


def is_within(path: PathLike, folder: PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, comparing the paths as given (resolve them first)."""
    path, folder = Path(path), Path(folder)
    return path == folder or folder in path.parents


def real_path(path: PathLike) -> Path:
    """``path`` with every symlink resolved and ``..`` removed (parts that do not exist yet are kept)."""
    return Path(os.path.realpath(path))


def check_not_nested(output_dir: PathLike, inputs: Sequence[PathLike]) -> None:
    """Refuse an output folder inside an input folder, equal to it, or containing it (symlinks resolved)."""
    out = real_path(output_dir)
    for inp in inputs:
        src = real_path(inp)
        if is_within(out, src):
            raise InputError(
                f"{output_dir}: the output folder is inside the input folder {inp}; choose a folder outside it")
        if is_within(src, out):
            raise InputError(
                f"{output_dir}: the output folder contains the input folder {inp}; choose a new, separate folder")


def prepare_output_dir(output_dir: PathLike, inputs: Sequence[PathLike] = (), *, overwrite: bool = False,
                       tool: str = "", settings: Optional[dict] = None) -> bool:
    """Check and create ``output_dir`` for ``tool``; returns True when it resumes an interrupted run.

    Refused (:class:`~ws_dan.common.io.InputError`): an output folder nested with an input folder; a path that is a
    file; a non-empty folder, unless ``overwrite`` or the folder holds the marker of an interrupted run of the
    same ``tool`` with the same ``settings`` (a JSON-serialisable dict of whatever decides the output).
    """
    out = Path(output_dir)
    check_not_nested(out, inputs)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: expected an output folder, found a file")
    resuming = False
    if out.is_dir() and any(out.iterdir()):
        marker = read_marker(out)
        if marker_matches(out, tool, settings):
            resuming = True
        elif not overwrite:
            hint = ""
            if marker is not None and marker.get("tool") == tool:
                hint = " (it holds an interrupted run with different settings)"
            raise InputError(f"{out}: the output folder exists and is not empty{hint}; choose a new folder or "
                             f"pass --overwrite to write into it")
    make_folder(out, "the output folder")
    if resuming:
        remove_stale_temp_files(out)
    write_marker(out, tool, settings)
    return resuming


def remove_stale_temp_files(out: PathLike) -> None:
    """Delete the hidden ``.<name>.*.tmp`` files a killed run left in its own output folder (they are debris)."""
    for dirpath, _dirnames, filenames in os.walk(out):  # not following links: only our own folder
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                Path(dirpath, name).unlink(missing_ok=True)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def marker_matches(output_dir: PathLike, tool: str, settings: Optional[dict]) -> bool:
    """Whether ``output_dir`` holds an interrupted run of ``tool`` with these ``settings``."""
    marker = read_marker(output_dir)
    return marker is not None and marker.get("tool") == tool and marker.get("settings") == _jsonable(settings)


def read_marker(output_dir: PathLike) -> Optional[dict]:
    """The interrupted-run marker of ``output_dir``, or None."""
    try:
        marker = json.loads((Path(output_dir) / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_marker(output_dir: PathLike, tool: str, settings: Optional[dict]) -> None:
    """Mark ``output_dir`` as holding a run of ``tool`` with ``settings`` that has not finished yet."""
    write_json(Path(output_dir) / MARKER_NAME, {"tool": tool, "settings": _jsonable(settings)})


def finish_output_dir(output_dir: PathLike) -> None:
    """Remove the interrupted-run marker: the job in ``output_dir`` is complete."""
    (Path(output_dir) / MARKER_NAME).unlink(missing_ok=True)


def remove_tree(path: PathLike) -> None:
    """Delete a folder the tool itself wrote earlier (used by ``--overwrite``); symlinks are not followed."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def output_path(root: PathLike, rel: PathLike, create: bool = True) -> Path:
    """``root / rel`` with its folders created, refusing any way out of ``root``.

    Refused (:class:`~ws_dan.common.io.InputError`): an absolute ``rel`` or one with ``..``, and a folder on the way
    that is a symlink (``out/A -> /elsewhere``: writing ``out/A/x.jpg`` would write outside the output) or a
    file. ``root`` itself may be a link: the user named it. ``create=False`` only checks (creates nothing), so that
    a tool can vet every destination before its first write.
    """
    root, rel = Path(root), Path(rel)
    if rel.is_absolute() or ".." in rel.parts:
        raise InputError(f"{rel}: expected a path inside {root}")
    if create:
        make_folder(root)
    folder = root
    for part in rel.parent.parts:
        folder = folder / part
        if folder.is_symlink():
            raise InputError(f"{folder}: is a link (to {os.readlink(folder)}) inside the output folder {root}; "
                             f"refusing to write through it")
        if not folder.is_dir():
            if os.path.lexists(folder):
                raise InputError(f"{folder}: expected a folder inside {root}, found a file")
            if not create:
                break  # missing: created at the write, and nothing below it can be a link yet
            make_folder(folder)
    return root / rel


def unique_path(path: Path, taken: set, tag: str = "") -> Path:
    """``path``, or a sibling name not in ``taken`` (``stem__tag.ext``, then ``stem__tag_2.ext`` ...).

    ``taken`` holds lower-cased path strings, so two names differing only in case (one file on macOS and
    Windows filesystems) do not collide either. The chosen path is added to ``taken``.
    """
    base = f"{path.stem}__{tag}" if tag else path.stem
    names = itertools.chain([path.name], [f"{base}{path.suffix}"] if tag else [],
                            (f"{base}_{k}{path.suffix}" for k in itertools.count(2)))
    for name in names:
        candidate = path.with_name(name)
        if str(candidate).lower() not in taken:
            break
    taken.add(str(candidate).lower())
    return candidate


# ---------------------------------------------------------------------------------------------------------------
# Folder locks: one run at a time moves files in a folder

#: The lock file a run that moves files holds in each folder it moves them in or out of (hidden: no scan sees it).
LOCK_NAME = ".ws_dan.lock"


class FolderLockedError(InputError):
    """Another run holds the folder's lock; the message names the folder and the holder's pid."""


#: Locks this process holds: real folder path -> [file descriptor, nesting depth]; a tool's library functions
#: lock the same folder again inside the run that locked it.
_HELD: dict[Path, list[int]] = {}


def _holder(lock: Path) -> dict:
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` runs on this machine (True when it cannot be told: the lock is kept)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover (os.kill would send the process a signal there)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by another user
        return True
    return True


def _locked_error(folder: PathLike, lock: Path, holder: dict) -> FolderLockedError:
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    who = f"{holder.get('tool') or 'another run'} (pid {holder.get('pid', 'unknown')}{where})"
    inside = "" if lock.parent == real_path(folder) else f" (it holds {lock.parent})"
    return FolderLockedError(f"{folder}: in use by {who}, which is moving files in it{inside}; wait for it to "
                             f"finish and run again (lock file {lock})")


def _lock_held(lock: Path) -> bool:
    """Whether a lock file that is not ours is held by a live run (a killed run's file is not)."""
    if fcntl is None:  # pragma: no cover
        holder = _holder(lock)
        return holder.get("host") != socket.gethostname() or _pid_alive(holder.get("pid"))
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # gone meanwhile, or a link: nobody's lock
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return False


def _nested_lock(key: Path) -> Optional[Path]:
    """A live lock of another run in a folder above ``key`` or below it (those runs move files here too)."""
    below = []
    for dirpath, dirnames, filenames in os.walk(key):  # links are not followed: a linked folder is not ours
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if LOCK_NAME in filenames and Path(dirpath) != key:
            below.append(Path(dirpath))
    for folder in [*key.parents, *below]:
        lock = folder / LOCK_NAME
        if folder not in _HELD and os.path.lexists(lock) and _lock_held(lock):
            return folder
    return None


def _flock_soon(fd: int, tries: int = 4) -> None:
    """An exclusive flock on ``fd``, tried a few times over 0.15 s: another run looking whether the lock is held
    takes it shared for an instant (:func:`_lock_held`), which must not read as "in use"."""
    for k in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if k == tries - 1:
                raise
            time.sleep(0.05)


def _acquire(folder: PathLike, tool: str) -> None:
    key = real_path(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        return
    lock = key / LOCK_NAME
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "tool": tool,
                         "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _attempt in range(20):
        try:
            fd = os.open(lock, flags if fcntl is not None else flags | os.O_EXCL, 0o644)
        except FileExistsError:  # no flock (Windows): the file is the lock; a dead holder's is stale
            holder = _holder(lock)
            if holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid")):
                lock.unlink(missing_ok=True)
                continue
            raise _locked_error(folder, lock, holder) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InputError(f"{lock}: is a link; expected the lock file a run makes there") from None
            raise write_error(folder, e, "lock the folder (a run that moves files there needs to)") from None
        if fcntl is not None:
            try:
                _flock_soon(fd)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise _locked_error(folder, lock, _holder(lock)) from None
                raise write_error(folder, e, "lock the folder") from None
            try:  # the holder may have removed the file (released) between our open and our flock
                same = os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            # A file left by a run that died (SIGKILL, power loss): its flock went with it; the pid says whose.
        try:
            os.ftruncate(fd, 0)
            os.write(fd, record)
        except OSError as e:
            os.close(fd)
            raise write_error(lock, e) from None
        _HELD[key] = [fd, 1]
        # Ours is in place before the others are looked for: of two runs on nested folders, one sees the other.
        other = _nested_lock(key)
        if other is not None:
            _release(key)
            raise _locked_error(folder, other / LOCK_NAME, _holder(other / LOCK_NAME))
        return
    raise _locked_error(folder, lock, _holder(lock))  # pragma: no cover (twenty runs racing for one folder)


def _release(folder: PathLike) -> None:
    key = real_path(folder)
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[key]
    with contextlib.suppress(OSError):
        (key / LOCK_NAME).unlink()  # first, while still locked: a run waiting on this file sees it is gone
    os.close(held[0])


@contextlib.contextmanager
def folder_lock(folders: Iterable[PathLike], tool: str = "") -> Iterator[None]:
    """Hold the exclusive lock of each of ``folders`` (:data:`LOCK_NAME` inside it) for the block.

    For every run that moves files in or out of a user's folder (a quarantine, its undo): a second one on the
    same folder raises :class:`FolderLockedError` (one line naming the folder and the holder's pid) before it
    reads anything. The lock is released when the block ends, however it ends; the lock file a killed run left is
    recognised (its process is gone) and taken over. Locking a folder this process already holds nests. A folder
    that cannot hold the lock file (read-only) raises :class:`~ws_dan.common.io.WriteError`.
    """
    taken: list[Path] = []
    try:
        for folder in sorted({real_path(f) for f in folders}):
            _acquire(folder, tool)
            taken.append(folder)
        yield
    finally:
        for folder in reversed(taken):
            _release(folder)


# ---------------------------------------------------------------------------------------------------------------
# Single files


def copy_file(src: PathLike, dst: PathLike, link: bool = False) -> str:
    """Copy (or hard-link) the file ``src`` names to ``dst`` atomically; returns ``"copied"`` or ``"linked"``.

    A symlink ``src`` is resolved first: the copy or hard link is of the real file. (``os.link`` on a symlink
    links the symlink itself, and a relative one then dangles from its new folder.) A hard link needs both paths
    on one filesystem; where it fails (another device, a filesystem without links) the file is copied and
    ``"copied"`` says so. ``dst``'s folder is created; an existing ``dst`` (a file or a link) is replaced, never
    written through.
    """
    src, dst = Path(src), Path(dst)
    real = real_path(src)
    if not real.is_file():
        raise FileNotFoundError(errno.ENOENT, "not a file (or a link to nothing)", str(src))
    how = "copied"
    with atomic_path(dst) as tmp:
        if link:
            try:
                os.link(real, tmp)
                how = "linked"
            except OSError:
                shutil.copy2(real, tmp)
        else:
            shutil.copy2(real, tmp)
    return how


def move_file(src: PathLike, dst: PathLike) -> None:
    """Move the path ``src`` itself to ``dst``, never replacing anything at ``dst`` and never leaving a partial file.

    A symlink moves as a link (its target is not touched, wherever it lies). On one filesystem the move is a hard
    link then an unlink (``link`` fails on an existing name, so no race can make it replace a file; the inode and
    times are kept), or a rename where the filesystem has no hard links. Across filesystems the file (or link) is
    copied under a temporary name beside ``dst``, linked into place, and only then removed from ``src``.
    Raises FileExistsError when ``dst`` exists, :class:`~ws_dan.common.io.WriteError` when the disk or the folder
    refuses the move (full, read-only); nothing is left at ``dst`` then.
    """
    src, dst = Path(src), Path(dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "already exists; refusing to replace it", str(dst))
    make_folder(dst.parent)
    try:
        _move(src, dst)
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError as e:
        raise write_error(dst, e, f"move {src} there") from None


def _move(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "already exists; refusing to replace it", str(dst)) from None
    except OSError as e:
        if e.errno != errno.EXDEV:
            if e.errno == errno.ENOENT or not os.path.lexists(src):
                raise
            os.rename(src, dst)  # no hard links here (EPERM, ENOTSUP...): dst was checked above
            return
    else:
        _unlink_source(src, dst)
        return
    tmp = free_temp_name(dst)
    try:
        if os.path.islink(src):
            os.symlink(os.readlink(src), tmp)  # the link text, byte for byte: undo restores the same link
        else:
            shutil.copy2(src, tmp)
        os.link(tmp, dst, follow_symlinks=False)
    finally:
        tmp.unlink(missing_ok=True)
    _unlink_source(src, dst)


def _unlink_source(src: Path, dst: Path) -> None:
    # The file is at both places now; if its folder will not let it go (read-only), the move did not happen.
    try:
        os.unlink(src)
    except OSError:
        os.unlink(dst)
        raise


def save_image(image: Any, dst: PathLike, format: str, **params: Any) -> None:
    """Save a PIL image to ``dst`` atomically in ``format`` (``"JPEG"``, ``"PNG"``...)."""
    from ws_dan.common.io import atomic_write

    with atomic_write(dst, "wb") as f:
        image.save(f, format=format, **params)
