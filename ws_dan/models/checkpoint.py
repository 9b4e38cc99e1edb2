"""Checkpoints: one file, tensors and plain Python values only, written atomically, read with weights_only=True.

Layout of a checkpoint (a dict)::

    format            "ws_dan.checkpoint"      identifies our files (a foreign .pt gets a clear error)
    format_version    1
    kind              what the model is: "wsdan" (this module), or another family's name (e.g. "sr")
    version           the toolkit version that wrote it
    config            ModelConfig.to_dict(): backbone, M, classes and their names, image size, normalisation
    model             state dict (the feature centers are a buffer, so they are in it)
    optimizer, scheduler, scaler    training state (None in an exported model)
    epoch             number of completed epochs
    best_top1, best_epoch           best validation top-1 so far and its epoch
    rng               torch / CUDA / numpy / python RNG states, for an exact resume
    args              the training flags (plain values), for the record
    interrupted       True when written on Ctrl-C in the middle of an epoch

Everything in it is a tensor, a number, a string, a list, a tuple, a dict or None, so ``torch.load`` never
needs to unpickle code: a checkpoint from an untrusted source cannot execute anything when loaded.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import random
import shutil
import signal
import threading
from collections.abc import Iterator
from numbers import Real
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from ws_dan import __version__
from ws_dan.common.io import PathLike, WriteError, atomic_write
from ws_dan.models.wsdan import MAX_DETAIL_SCALE, METHODS, ModelConfig, create_model

log = logging.getLogger(__name__)

FORMAT = "ws_dan.checkpoint"  # the format's name, fixed: not the module's path, so files keep loading if it moves
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, foreign, or does not fit the model asked for."""


def save_checkpoint(path: PathLike, state: dict[str, Any], kind: str = "wsdan") -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A crash while writing leaves the previous file intact and no half-written file behind. Ctrl-C (SIGINT)
    during the write is deferred until the file is complete and renamed, then raised as KeyboardInterrupt:
    interrupting torch.save's zip writer midway ended in a RuntimeError and no checkpoint at all. A write the disk
    refuses (full, read-only) raises :class:`~ws_dan.common.io.WriteError`, one line naming ``path`` and the
    reason, also when torch reports it as its zip writer's RuntimeError; the previous file is kept.
    """
    path = Path(path)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "version": __version__, **state}
    try:
        with deferred_sigint(f"writing {path}"), atomic_write(path, "wb") as f:
            torch.save(state, f)
    except RuntimeError as e:
        if not is_write_failure(e):
            raise
        raise WriteError(path, *write_failure_reason(path, e)) from None
    return path


#: Words of torch's zip writer when the file under it fails ("[enforce fail at inline_container.cc:...]
#: PytorchStreamWriter failed writing file data/0: file write failed").
_TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed", "unexpected pos")
#: Free bytes below which a failed write is put down to a full disk.
_NEARLY_FULL = 64 << 20


def is_write_failure(e: BaseException) -> bool:
    """Whether ``e`` (a RuntimeError of torch.save) is its writer failing to write the file."""
    return isinstance(e, RuntimeError) and any(w in str(e) for w in _TORCH_WRITE_FAILURES)


def write_failure_reason(path: PathLike, e: BaseException) -> tuple[str, Optional[int]]:
    """The reason for torch's write failure ``e`` at ``path``, and its errno where known: torch's message names no
    cause, so a disk with (almost) no room left is taken as the cause; else the message's last part."""
    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        free = None
    if free is not None and free < _NEARLY_FULL:
        return os.strerror(errno.ENOSPC), errno.ENOSPC
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"torch could not write the file ({first.split(']')[-1].strip(' .')})", None


@contextlib.contextmanager
def deferred_sigint(what: str = "writing") -> Iterator[None]:
    """Hold back SIGINT while the block runs; afterwards, act on it as the previous handler would have.

    Only the main thread can set signal handlers, so elsewhere (a DataLoader thread, a notebook worker) this
    does nothing. If the block raises, that exception wins and a deferred Ctrl-C is dropped (the run is
    stopping anyway). With Python's default handler, the deferred Ctrl-C becomes KeyboardInterrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if not received:
            log.warning("Ctrl-C: finishing %s first, then stopping", what)
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if callable(previous):
            previous(signal.SIGINT, None)  # Python's default_int_handler raises KeyboardInterrupt
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt
        # SIG_IGN: the process ignores Ctrl-C, so do we


def load_torch_file(path: PathLike, error: type[Exception] = CheckpointError,
                    what: str = "checkpoint (truncated, corrupt, or not a torch.save file)") -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (loading cannot run code), its failures as one line.

    Whatever torch raises (a truncated zip, a pickle with code in it, not a torch file at all) becomes ``error``
    with the message "``path``: not a readable PyTorch ``what``: the first line of torch's message". An exported
    model (TorchScript or ONNX, which export.py writes) is named as such first, with what to pass instead: torch's
    own advice for it would be ``weights_only=False``, which is unsafe and not the user's to set.
    """
    exported = exported_model_kind(path)
    if exported is not None:
        article = "an" if exported == "ONNX" else "a"
        raise error(f"{path}: {article} {exported} export of a model, not a checkpoint; pass the .pt checkpoint that "
                    f"train.py wrote (last.pt or best.pt), which export.py made this file from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{path}: not a readable PyTorch {what}: {first_line}") from None


def exported_model_kind(path: PathLike) -> Optional[str]:
    """"TorchScript" or "ONNX" when ``path`` holds such an export (by its content, not its name), else None.

    A TorchScript archive is a zip with ``<name>/constants.pkl`` and ``<name>/code/``; an ONNX file is a protobuf
    ModelProto whose first field is ``ir_version`` (tag byte 0x08) and that names its producer early on."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            scripted = any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)
            return "TorchScript" if scripted else None
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    return "ONNX" if head[:1] == b"\x08" and (b"pytorch" in head or b"onnx" in head.lower()) else None


def load_checkpoint(path: PathLike, kind: Optional[str] = "wsdan") -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save_checkpoint` (on the CPU, ``weights_only=True``).

    ``kind`` is the model family expected ("wsdan", "sr", ...); None accepts any.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    return validate_checkpoint(load_torch_file(path), path, kind)


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is one of this toolkit's checkpoints (by its format name, not its contents)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def validate_checkpoint(state: Any, path: PathLike, kind: Optional[str] = "wsdan") -> dict[str, Any]:
    """``state`` (what ``path`` held) if it is a checkpoint of ``kind`` this version reads; CheckpointError if not.

    ``kind`` as in :func:`load_checkpoint`."""
    if not is_checkpoint(state):
        found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint of this toolkit (expected a dict with format={FORMAT!r}; found {found}). "
            "Checkpoints of other WS-DAN code need converting first."
        )
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer version of the toolkit (format {state['format_version']}, "
            f"this one reads up to {FORMAT_VERSION}); upgrade the toolkit"
        )
    found_kind = state.get("kind", "wsdan")
    if kind is not None and found_kind != kind:
        raise CheckpointError(f"{path}: this is a {found_kind!r} checkpoint; a {kind!r} checkpoint is needed here")
    for key in ("config", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    return state


# Sane bounds for a checkpoint's config: it is input like any other, and an absurd image_size would have predict.py
# or export.py allocate tens of gigabytes before any error.
INT_BOUNDS = {"image_size": (8, 4096), "num_attentions": (1, 1024), "num_classes": (1, 100_000),
              "detail_scale": (1, MAX_DETAIL_SCALE)}
UNIT_INTERVAL = ("eval_crop_theta", "eval_crop_padding")
BOOL_KEYS = ("attention_bn", "pool_normalize", "fc_bias")
CHOICES = {"method": METHODS, "attention_norm": ("max", "minmax"),
           "resize_interpolation": ("bilinear", "lanczos"), "crop_convention": ("wsdan", "grab")}


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _config_problem(raw: dict[str, Any]) -> Optional[str]:
    """The first thing wrong with a raw config dict, worded for the user, or None."""
    for key, (low, high) in INT_BOUNDS.items():
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                return f"{key}={v!r}, expected an integer from {low} to {high}"
    load_size = raw.get("image_size", 512) * raw.get("detail_scale", 1)
    if load_size > INT_BOUNDS["image_size"][1]:
        return (f"image_size x detail_scale = {load_size} px, expected at most {INT_BOUNDS['image_size'][1]} "
                "(the side of every image the loader makes)")
    for key in ("mean", "std"):
        if key in raw:
            v = raw[key]
            if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_number(x) for x in v):
                return f"{key}={v!r}, expected 3 finite numbers (one per RGB channel)"
            if key == "std" and not all(x > 0 for x in v):
                return f"std={v!r}, expected 3 numbers > 0"
    if "logit_scale" in raw and not (_is_number(raw["logit_scale"]) and raw["logit_scale"] > 0):
        return f"logit_scale={raw['logit_scale']!r}, expected a finite number > 0"
    for key in UNIT_INTERVAL:
        if key in raw and not (_is_number(raw[key]) and 0 <= raw[key] <= 1):
            return f"{key}={raw[key]!r}, expected a number from 0 to 1"
    for key in BOOL_KEYS:
        if key in raw and not isinstance(raw[key], bool):
            return f"{key}={raw[key]!r}, expected true or false"
    for key, allowed in CHOICES.items():
        if key in raw and raw[key] not in allowed:
            return f"{key}={raw[key]!r}, expected one of {list(allowed)}"
    backbone = raw.get("backbone", ModelConfig.backbone)
    if not isinstance(backbone, str):
        return f"backbone={backbone!r}, expected a backbone name"
    from ws_dan.models.backbones import canonical_name

    try:
        canonical_name(backbone)
    except ValueError as e:
        return str(e)
    if backbone.startswith("timm:"):
        try:
            import timm
        except ImportError:
            return f"backbone {backbone!r} needs the optional package timm: pip install timm"
        if not timm.is_model(backbone[len("timm:"):]):
            return f"backbone {backbone!r}: this timm ({timm.__version__}) has no such model"
    names = raw.get("class_names", [])
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return f"class_names must be a list of strings, found {type(names).__name__}"
    num_classes = raw.get("num_classes", ModelConfig.num_classes)
    if len(names) != num_classes:
        return f"{len(names)} class names for num_classes={num_classes}"
    return None


def validate_config(raw: Any, source: PathLike = "<checkpoint>") -> ModelConfig:
    """A checkpoint's ``config`` entry checked against sane bounds, as a ModelConfig; CheckpointError naming
    ``source`` and the offending value otherwise (bounds: :data:`INT_BOUNDS`, mean/std 3 finite numbers with
    std > 0, logit_scale > 0, crop theta and padding in [0, 1], known method / backbone / conventions,
    one class name per class)."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: invalid model config: expected a dict, found {type(raw).__name__}")
    problem = _config_problem(raw)
    if problem is None:
        try:
            return ModelConfig.from_dict(raw)
        except (TypeError, ValueError) as e:
            problem = str(e)
    raise CheckpointError(f"{source}: invalid model config: {problem}")


def checkpoint_config(state: dict[str, Any], source: PathLike = "<checkpoint>") -> ModelConfig:
    """The validated ModelConfig a checkpoint carries (see :func:`validate_config`)."""
    return validate_config(state["config"], source)


def check_compatible(found: ModelConfig, wanted: dict[str, Any], source: PathLike) -> None:
    """Raise a CheckpointError naming both sides when a checkpoint's model differs from what a run asks for.

    ``wanted`` holds only the settings the user fixed (e.g. ``{"backbone": "resnet50", "class_names": [...]}``).
    """
    problems = []
    for key, value in wanted.items():
        have = getattr(found, key)
        if key == "backbone":
            from ws_dan.models.backbones import canonical_name

            value = canonical_name(value)
        if have != value:
            if key == "class_names":
                extra, missing = sorted(set(have) - set(value)), sorted(set(value) - set(have))
                detail = f"{len(have)} classes vs {len(value)}"
                if extra or missing:
                    detail += f"; only in checkpoint: {extra[:5]}, only in data: {missing[:5]}"
                else:
                    detail += " (same names, different order)"
                problems.append(f"class names: {detail}")
            else:
                problems.append(f"{key}: checkpoint has {have!r}, this run asks for {value!r}")
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not fit this run: " + "; ".join(problems))


def load_model_state(model: nn.Module, state_dict: dict[str, torch.Tensor], source: PathLike,
                     assign: bool = False) -> None:
    """``model.load_state_dict`` with an error that names the mismatching keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{source}: weights do not fit the model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(shapes)} of another shape "
            f"(e.g. {shapes[:2]})"
        )
    model.load_state_dict(state_dict, assign=assign)


def build_model_from_state(config: ModelConfig, state_dict: dict[str, torch.Tensor], source: PathLike) -> nn.Module:
    """The configured model (WSDAN or baseline) with the given weights.

    It is built on the meta device (no memory, no random initialisation: Inception's truncated-normal init alone
    takes seconds) and the checkpoint's tensors are assigned to it."""
    with torch.device("meta"):
        model = create_model(config)
    load_model_state(model, state_dict, source, assign=True)
    leftover = [name for name, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:  # a non-persistent buffer the state dict cannot carry: build normally instead
        model = create_model(config)
        load_model_state(model, state_dict, source)
    return model


def model_from_checkpoint(path_or_state: Union[PathLike, dict], device: Optional[torch.device] = None,
                          source: Optional[PathLike] = None) -> nn.Module:
    """Rebuild the model from a checkpoint alone (its config says the backbone, M, classes...), in eval mode.

    ``source`` names the file in errors when a loaded state is passed (default: the path, or "<checkpoint>")."""
    state = path_or_state if isinstance(path_or_state, dict) else load_checkpoint(path_or_state)
    if source is None:
        source = "<checkpoint>" if isinstance(path_or_state, dict) else path_or_state
    model = build_model_from_state(checkpoint_config(state, source), state["model"], source)
    return model.to(device or "cpu").eval()


# --------------------------------------------------------------------------------------------------------
# RNG state as plain values (numpy's state is a tuple holding an ndarray, which weights_only refuses)


def get_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(_to_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
