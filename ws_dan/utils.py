"""Small helpers shared by the scripts: devices, seeds, logging, atomic file writes, flag parsing.

torch is imported inside the functions that need it, so the data tools (which use the file helpers here) start
without paying for it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, NoReturn, Optional, Sequence, Union

if TYPE_CHECKING:  # pragma: no cover
    import torch

PathLike = Union[str, os.PathLike]


def default_workers() -> int:
    """CPU cores available to this process (the reference project's -j default)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def parse_gpu_ids(text: Optional[str]) -> list[int]:
    """'0,1' -> [0, 1]; None or '' -> []."""
    if not text:
        return []
    try:
        return [int(t) for t in str(text).replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpu-ids expects comma-separated integers like 0,1; got {text!r}") from None


def resolve_device(name: str = "auto", gpu_ids: Sequence[int] = ()) -> "torch.device":
    """``auto`` -> CUDA when present, else the CPU; ``--gpu-ids`` picks the first listed GPU."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name} asked for, but PyTorch sees no CUDA GPU (use --device cpu)")
        if gpu_ids:
            bad = [i for i in gpu_ids if i >= torch.cuda.device_count()]
            if bad:
                raise RuntimeError(f"--gpu-ids {bad}: only {torch.cuda.device_count()} GPU(s) visible")
            return torch.device("cuda", gpu_ids[0])
    return torch.device(name)


def wrap_data_parallel(model: "torch.nn.Module", device: "torch.device", gpu_ids: Sequence[int]) -> "torch.nn.Module":
    """Several ``--gpu-ids`` on one machine: split each batch over them with nn.DataParallel.

    (torchrun + DistributedDataParallel scales better; DataParallel keeps the reference project's flag working.)
    """
    import torch

    if device.type == "cuda" and len(gpu_ids) > 1:
        return torch.nn.DataParallel(model, device_ids=list(gpu_ids), output_device=gpu_ids[0])
    return model


def amp_dtype(enabled: bool, device: "torch.device", log: Optional[logging.Logger] = None) -> "Optional[torch.dtype]":
    """bf16 where the GPU supports it (no loss scaling needed), else fp16; None (full precision) off CUDA."""
    import torch

    if not enabled:
        return None
    if device.type != "cuda":
        if log:
            log.warning("--amp has an effect only on CUDA; running in full precision on %s", device)
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def str2bool(text: Union[str, bool]) -> bool:
    """argparse type for the reference project's ``--do-eval true|false`` style flags."""
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def setup_logging(log_file: Optional[PathLike] = None, verbose: bool = False, name: str = "ws_dan") -> logging.Logger:
    """Log to the console (through tqdm, so progress bars stay intact) and, optionally, to a file."""
    log = logging.getLogger(name)
    log.handlers.clear()
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    return log


class _TqdmHandler(logging.StreamHandler):
    """Console handler that writes through ``tqdm.write`` so log lines do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


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
    fieldnames = list(fieldnames or (rows[0].keys() if rows else []))
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def read_csv_rows(path: PathLike) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit a script with one clear line instead of a traceback (for errors in the user's input)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
