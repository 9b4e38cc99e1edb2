"""Loading DBPN weights: the authors' published ``.pth`` files and this toolkit's own SR checkpoints.

A published file (e.g. ``DBPN_x4.pth``) is a bare state dict saved from ``nn.DataParallel``, so every key
starts with ``module.``. It says nothing about its variant or scale, so both are read off the tensors:

* scale:    the projection kernel size, ``up1.up_conv1.deconv.weight[..., k, k]``: 6 -> 2x, 8 -> 4x, 12 -> 8x
* variant:  T = the highest ``upT`` index, and O = the output conv's input channels / the base filters
            (``output_conv.conv.weight.shape[1] / up1.up_conv1.deconv.weight.shape[0]``):
            O == T: dense (T = 2 DBPN-S, 7 D-DBPN, 10 DBPNLL); O != T with T == 7: recurrent with O passes
            (O = 3: DBPN-RES-MR64-3).

A toolkit checkpoint (``ws_dan.models.checkpoint.save_checkpoint(..., kind="sr")``) carries ``config`` =
``{"variant", "scale", "residual"}`` beside the weights and is read with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ws_dan.common.io import PathLike
from ws_dan.models.checkpoint import CheckpointError, is_checkpoint, load_torch_file, validate_checkpoint

from .dbpn import DBPN, PROJECTION, VARIANTS

_KERNEL_TO_SCALE = {k: s for s, (k, _, _) in PROJECTION.items()}


class SRWeightsError(RuntimeError):
    """A weights file that is missing, unreadable, not DBPN, or not the variant / scale asked for."""


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from every key that has it (DataParallel / DDP saves add ``module.``); a new dict.

    A thin use of torch's ``consume_prefix_in_state_dict_if_present``, which renames in place."""
    sd = dict(state_dict)
    consume_prefix_in_state_dict_if_present(sd, prefix)
    return sd


def describe_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Infer ``{"variant", "scale", "name", "stages", "output_maps", "kernel"}`` from a DBPN state dict.

    ``variant`` is None when the layout is DBPN-like but not one of the four known variants. Raises
    SRWeightsError when the tensors are not DBPN's at all.
    """
    sd = strip_prefix(state_dict)
    key = "up1.up_conv1.deconv.weight"
    if key not in sd or "output_conv.conv.weight" not in sd:
        raise SRWeightsError(f"not DBPN weights (no {key!r} / 'output_conv.conv.weight'; keys look like "
                             f"{sorted(sd)[:4]})")
    w = sd[key]
    kernel = int(w.shape[-1])
    base = int(w.shape[0])
    scale = _KERNEL_TO_SCALE.get(kernel)
    stages = max(int(k.split(".")[0][2:]) for k in sd if k.startswith("up") and k.split(".")[0][2:].isdigit())
    output_maps = int(sd["output_conv.conv.weight"].shape[1]) // max(base, 1)
    variant = None
    for name, spec in VARIANTS.items():
        maps = spec.num_stages if spec.iterations == 1 else spec.iterations
        if spec.num_stages == stages and maps == output_maps:
            variant = name
    return {"variant": variant, "scale": scale, "stages": stages, "output_maps": output_maps, "kernel": kernel,
            "name": VARIANTS[variant].name if variant else None}


def describe(info: Mapping[str, Any]) -> str:
    """Human wording of :func:`describe_state_dict`'s result, e.g. 'D-DBPN for 4x (projection kernel 8)'."""
    what = info["name"] or f"an unknown DBPN layout ({info['stages']} up-projection units, output conv over " \
                           f"{info['output_maps']} maps)"
    scale = f"{info['scale']}x" if info["scale"] else "an unknown scale"
    return f"{what} for {scale} (projection kernel {info['kernel']}x{info['kernel']})"


def load_dbpn_weights(model: DBPN, state_dict: Mapping[str, torch.Tensor], source: PathLike = "<weights>") -> None:
    """Load a DBPN state dict (``module.`` prefix or not) into ``model``, refusing a wrong variant or scale.

    The error names what the file looks like and what the model is, e.g. "weights are D-DBPN for 4x
    (projection kernel 8x8); the model is DBPN-S for 2x".
    """
    sd = strip_prefix(state_dict)
    try:
        info = describe_state_dict(sd)
    except SRWeightsError as e:
        raise SRWeightsError(f"{source}: {e}") from None
    if info["variant"] != model.variant or info["scale"] != model.scale:
        raise SRWeightsError(
            f"{source}: these weights are {describe(info)}; the model is {model.spec.name} for {model.scale}x "
            f"(pick the variant and scale that match the file)")
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise SRWeightsError(
            f"{source}: weights do not fit {model.spec.name} {model.scale}x: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(shapes)} of "
            f"another shape (e.g. {shapes[:2]})")
    model.load_state_dict(sd)


def sr_config(model: DBPN) -> dict[str, Any]:
    """The ``config`` entry of an SR checkpoint: enough to rebuild the network."""
    return {"family": "dbpn", "variant": model.variant, "scale": model.scale, "residual": model.residual}


def model_from_config(config: Mapping[str, Any]) -> DBPN:
    """Build the (untrained) network a checkpoint's ``config`` describes."""
    try:
        return DBPN(str(config["variant"]), int(config["scale"]), residual=bool(config.get("residual", False)))
    except (KeyError, ValueError) as e:
        raise SRWeightsError(f"SR checkpoint config {dict(config)} does not describe a DBPN: {e}") from None


def load_sr_model(path: PathLike, device: Union[str, torch.device] = "cpu", variant: Optional[str] = None,
                  scale: Optional[int] = None) -> tuple[DBPN, int]:
    """Load ``path`` (a published DBPN ``.pth`` or a toolkit SR checkpoint) -> ``(model in eval mode, scale)``.

    ``variant`` / ``scale``, when given, must match the file; otherwise SRWeightsError says what the file is.
    Files are read with ``torch.load(weights_only=True)``: loading one cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise SRWeightsError(f"{path}: super-resolution weights file not found")
    obj = load_torch_file(path, SRWeightsError, "weights file (truncated, corrupt, or not saved by torch.save)")
    if is_checkpoint(obj):
        try:
            state = validate_checkpoint(obj, path, kind="sr")
        except CheckpointError as e:
            raise SRWeightsError(str(e)) from None
        model = model_from_config(state["config"])
        sd = state["model"]
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
        try:
            info = describe_state_dict(sd)
        except SRWeightsError as e:
            raise SRWeightsError(f"{path}: {e}") from None
        if info["variant"] is None or info["scale"] is None:
            raise SRWeightsError(f"{path}: weights are {describe(info)}, not one of the supported variants "
                                 f"({', '.join(s.name for s in VARIANTS.values())}) at 2x, 4x or 8x")
        model = DBPN(info["variant"], info["scale"])
    else:
        raise SRWeightsError(f"{path}: expected a DBPN state dict or a toolkit SR checkpoint; found "
                             f"{type(obj).__name__} with keys {sorted(obj)[:5] if isinstance(obj, dict) else '-'}")
    wanted = []
    if variant is not None and variant != model.variant:
        wanted.append(f"variant {VARIANTS[variant].name if variant in VARIANTS else variant}")
    if scale is not None and int(scale) != model.scale:
        wanted.append(f"scale {scale}x")
    if wanted:
        raise SRWeightsError(f"{path}: holds {model.spec.name} for {model.scale}x; {' and '.join(wanted)} was asked "
                             f"for")
    load_dbpn_weights(model, sd, path)
    return model.to(device).eval(), model.scale
