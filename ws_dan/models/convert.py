"""Convert WS-DAN checkpoints written by other code into this toolkit's format.

Two layouts are understood, both dicts saved by ``torch.save`` with ``state_dict`` and ``feature_center``:

``grab``  the reference project (sun-yitao/GrabAIChallenge, 96.19% on its Stanford Cars split): an
          efficientnet-pytorch EfficientNet stored whole under ``net.`` of which only the blocks before the last
          four are used; ``attentions.weight`` a bare 1x1 conv (no BN, no ReLU); attention pooling WITHOUT
          sign-sqrt or L2 normalisation; ``fc.weight`` + ``fc.bias``; ``feature_center`` (classes, M, C). Its
          predict script resized images with PIL's LANCZOS and cropped its own way: the mean map min-max
          normalised on the feature grid, upsampled with align_corners=True, thresholded at 0.5, the box sliced
          without its last row and column and resized back with align_corners=True. The converted config records
          that (``resize_interpolation="lanczos"``, ``crop_convention="grab"``), so predict.py reproduces the
          reference pipeline's averaged raw + crop logits, not only its raw logits.
``guyuc`` GuYuc/WS-DAN.PyTorch: Inception-v3 up to Mixed_6e under ``features.N`` (the same module order as
          torchvision's), ``attentions.conv.weight`` + ``attentions.bn.*``, sign-sqrt + L2 pooling, ``fc.weight``
          without bias applied to 100 x the feature matrix, ``feature_center`` (classes, M*C); inference crop at
          theta 0.1 with 5% padding. Inputs are normalised with ImageNet statistics (its Sequential bypasses
          Inception's transform_input).

The converted model reproduces the original network's logits exactly; the ModelConfig records the head
variant (``attention_bn``, ``pool_normalize``, ``fc_bias``, ``logit_scale``, ``attention_norm``) and the
inference convention (``resize_interpolation``, ``crop_convention``).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ws_dan.common.io import PathLike
from ws_dan.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from ws_dan.models.checkpoint import build_model_from_state
from ws_dan.models.wsdan import WSDAN, ModelConfig

FORMATS = ("grab", "guyuc")


class ConversionError(ValueError):
    """An input file that is not a checkpoint of the expected layout."""


def load_legacy_file(path: PathLike, trust_pickle: bool = False) -> dict:
    """Read an old checkpoint with ``weights_only=True`` (numpy scalars, common in old logs, allowed).

    Old files are pickles: anything beyond tensors and plain values could run code when unpickled, so such a
    file is refused unless ``trust_pickle`` (the ``--trust-pickle`` flag) says the user trusts its source.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: file not found")
    numpy_scalars = [np.dtype, type(np.dtype("float64")), type(np.dtype("float32")), type(np.dtype("int64"))]
    try:
        numpy_scalars.append(np._core.multiarray.scalar)  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        numpy_scalars.append(np.core.multiarray.scalar)
    try:
        with torch.serialization.safe_globals(numpy_scalars):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if not trust_pickle:
            raise ConversionError(
                f"{path}: could not be read with weights_only=True ({reason}). If the file holds Python objects "
                "beyond tensors, loading it could run code; if you trust its source, rerun with --trust-pickle."
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)  # the user vouched for this file
        except Exception as e2:
            raise ConversionError(f"{path}: not a readable PyTorch file ({e2})") from None
    if not isinstance(obj, dict):
        raise ConversionError(
            f"{path}: expected a dict with 'state_dict' and 'feature_center'; found {type(obj).__name__}")
    return obj


def _require(state: dict, keys: Sequence[str], fmt: str, source: PathLike) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConversionError(
            f"{source}: not a {fmt!r} WS-DAN checkpoint: missing {missing}; found keys like {sorted(state)[:6]}"
        )


def convert_state(
    checkpoint: dict,
    fmt: str,
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    backbone: Optional[str] = None,
    image_size: Optional[int] = None,
    source: PathLike = "<checkpoint>",
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map an old checkpoint dict to ``(ModelConfig, state_dict)`` of :class:`~ws_dan.models.wsdan.WSDAN`."""
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if "state_dict" not in checkpoint:
        raise ConversionError(f"{source}: expected a dict with 'state_dict'; found keys {sorted(checkpoint)[:8]}")
    state = dict(checkpoint["state_dict"])  # a copy: torch's helper renames in place
    consume_prefix_in_state_dict_if_present(state, "module.")  # saved from nn.DataParallel
    if fmt == "grab":
        _require(state, ["attentions.weight", "fc.weight", "fc.bias", "net._conv_stem.weight"], fmt, source)
        att = state["attentions.weight"]
        n_blocks = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("net._blocks."))
        new = {}
        for key, value in state.items():
            if key.startswith("net._blocks."):
                if int(key.split(".")[2]) < n_blocks - 4:  # the reference used all blocks but the last four
                    new["features." + key[len("net."):]] = value
            elif key.startswith(("net._conv_stem.", "net._bn0.")):
                new["features." + key[len("net."):]] = value
            elif key == "attentions.weight":
                new["attentions.conv.weight"] = value
            elif key in ("fc.weight", "fc.bias"):
                new[key] = value
            # net._conv_head, net._bn1 and net._fc belong to the unused ImageNet head: dropped
        head = dict(attention_bn=False, pool_normalize=False, fc_bias=True, logit_scale=1.0, attention_norm="minmax",
                    eval_crop_theta=0.5, eval_crop_padding=0.0, resize_interpolation="lanczos", crop_convention="grab")
        backbone = backbone or "efficientnet-b3"
        image_size = image_size or 512
    else:
        _require(state, ["attentions.conv.weight", "attentions.bn.weight", "fc.weight"], fmt, source)
        if "fc.bias" in state:
            raise ConversionError(f"{source}: has fc.bias; WS-DAN.PyTorch's classifier has none (wrong --from?)")
        new = {k: v for k, v in state.items() if k.startswith(("features.", "attentions.", "fc."))}
        att = state["attentions.conv.weight"]
        head = dict(attention_bn=True, pool_normalize=True, fc_bias=False, logit_scale=100.0, attention_norm="max",
                    eval_crop_theta=0.1, eval_crop_padding=0.05)
        backbone = backbone or "inception"
        image_size = image_size or 448
    m, channels = att.shape[0], att.shape[1]
    found_classes = new["fc.weight"].shape[0]
    if num_classes is not None and num_classes != found_classes:
        raise ConversionError(f"{source}: classifier has {found_classes} classes, --num-classes says {num_classes}")
    names = list(class_names) if class_names else [f"class_{i:03d}" for i in range(found_classes)]
    if len(names) != found_classes:
        raise ConversionError(f"{source}: {len(names)} class names given for {found_classes} classes")
    centers = checkpoint.get("feature_center")
    new["feature_centers"] = (centers.reshape(found_classes, m * channels).float() if centers is not None
                              else torch.zeros(found_classes, m * channels))
    config = ModelConfig(backbone=backbone, num_classes=found_classes, class_names=names, num_attentions=m,
                         image_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, **head)
    return config, new


def convert_checkpoint(path: PathLike, fmt: str, trust_pickle: bool = False, **kwargs) -> tuple[WSDAN, dict]:
    """Load an old checkpoint, convert it and check it fits the model; returns (model, checkpoint state)."""
    config, state = convert_state(load_legacy_file(path, trust_pickle), fmt, source=path, **kwargs)
    model = build_model_from_state(config, state, path)  # names every missing / unexpected / mis-shaped key
    return model.eval(), {"config": config.to_dict(), "model": model.state_dict(), "epoch": 0,
                          "converted_from": {"format": fmt, "path": str(path)}}
