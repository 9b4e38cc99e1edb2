"""Small helpers shared by the scripts: devices, seeds, logging, flag parsing (file writers: ``ws_dan.common.io``).

torch is imported inside the functions that need it, so the data tools (which use the file helpers here) start
without paying for it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, Optional, Union

from ws_dan.common.io import PathLike

if TYPE_CHECKING:  # pragma: no cover
    import torch


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


def resolve_device(name: str = "auto", gpu_ids: Sequence[int] = ()) -> torch.device:
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


def wrap_data_parallel(model: torch.nn.Module, device: torch.device, gpu_ids: Sequence[int]) -> torch.nn.Module:
    """Several ``--gpu-ids`` on one machine: split each batch over them with nn.DataParallel.

    (torchrun + DistributedDataParallel scales better; DataParallel keeps the reference project's flag working.)
    """
    import torch

    if device.type == "cuda" and len(gpu_ids) > 1:
        return torch.nn.DataParallel(model, device_ids=list(gpu_ids), output_device=gpu_ids[0])
    return model


def amp_dtype(enabled: bool, device: torch.device, log: Optional[logging.Logger] = None) -> Optional[torch.dtype]:
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


#: Top-level loggers of the project's packages; every module logs under its own ``__name__`` below one of them.
PROJECT_LOGGERS = ("ws_dan", "super_resolution", "data_tools")


def setup_logging(log_file: Optional[PathLike] = None, verbose: bool = False, name: str = "ws_dan") -> logging.Logger:
    """Log every project package (:data:`PROJECT_LOGGERS`) to stderr and optionally a file; returns ``name``'s logger.

    Plain handlers: around a loop with progress bars, :func:`tqdm_logging` routes the console lines through
    ``tqdm.write`` so they do not break the bars. Calling it again replaces (and closes) the handlers it set."""
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(handler)
    for n in PROJECT_LOGGERS:
        logger = logging.getLogger(n)
        for old in list(logger.handlers):
            logger.removeHandler(old)
            old.close()  # a FileHandler left open would keep the previous run's train.log open
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        # Records still propagate, so a notebook's or pytest's root handlers see them too; a script's root
        # logger has no handlers, so each line is printed once.
        logger.propagate = True
        for h in handlers:
            logger.addHandler(h)
    return logging.getLogger(name)


def tqdm_logging() -> contextlib.AbstractContextManager:
    """Inside the block, console log lines of the project loggers go through tqdm (bars stay intact)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.getLogger(n) for n in PROJECT_LOGGERS])


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit a script with one clear line instead of a traceback (for errors in the user's input)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


#: What Ctrl-C says for a job whose written files are each complete (written atomically) and that resumes.
RERUN_TO_FINISH = "interrupted; files already written are complete: run the same command again to finish {}"


@contextlib.contextmanager
def job_errors(output_dir: PathLike, interrupted: Optional[str] = None):
    """Around a data tool's job: the library's InputError (and, with --strict, an unreadable image) as one error
    line, any other OSError as one line naming its path (default ``output_dir``) and the system's reason, and
    Ctrl-C as ``interrupted`` (a message, ``{}`` standing for ``output_dir``; e.g. :data:`RERUN_TO_FINISH`) with exit
    code 130 (None: Ctrl-C stays a KeyboardInterrupt). One place, so every data script refuses alike."""
    from ws_dan.common.images import UnreadableImageError
    from ws_dan.common.io import InputError, os_error_message

    try:
        yield
    except (InputError, UnreadableImageError) as e:  # also a write the disk refused (WriteError)
        fail(str(e) + (" (--strict)" if isinstance(e, UnreadableImageError) else ""))
    except OSError as e:
        fail(os_error_message(e, output_dir))
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        fail(interrupted.format(output_dir), code=130)
