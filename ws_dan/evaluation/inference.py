"""Inference: class probabilities (and mean attention maps) of a model over a loader, and top-k hits.

:func:`predict` runs the model's inference views (``predict_logits``: the raw view, plus the attention crop for
WS-DAN) under mixed precision when asked; it takes the model possibly wrapped (DataParallel /
DistributedDataParallel / torch.compile) and reaches the module underneath with :func:`unwrap`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ws_dan.data.datasets import Batch, SkipLog

TOPK = (1, 3, 5)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DataParallel / DistributedDataParallel / torch.compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA when ``dtype`` is given (bf16 or fp16); a no-op otherwise."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = TOPK) -> torch.Tensor:
    """Number of images whose target is among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (B, kmax)
    hit = top.eq(targets.unsqueeze(1))
    return torch.stack([hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]).float()


class Predictions(NamedTuple):
    probabilities: np.ndarray  # (N, num_classes) softmax, float32
    indices: np.ndarray  # dataset index of each row
    targets: np.ndarray  # label of each row (-1 when unlabelled)
    attention: list[tuple[int, np.ndarray]]  # (dataset index, mean attention map (h, w)) for the first images


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    keep_attention: int = 0,
    skip_log: Optional[SkipLog] = None,
    progress: bool = True,
    thetas: Optional[Sequence[float]] = None,
    flip: bool = False,
) -> Predictions:
    """Class probabilities for every readable image, in loader order; the mean attention map of the first
    ``keep_attention`` images (for heatmaps). ``thetas`` / ``flip``: test-time views (see predict_logits)."""
    model.eval()
    probs, indices, targets, attention = [], [], [], []
    for batch in tqdm(loader, desc="predict", disable=not progress, dynamic_ncols=True):
        if skip_log is not None:
            skip_log.add(batch.failed)
        if batch.images is None:
            continue
        with autocast(device, amp_dtype):
            images = batch.images.to(device, non_blocking=True)
            logits, mean_attention = unwrap(model).predict_logits(images, thetas=thetas, flip=flip)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        indices.append(batch.indices)
        targets.append(batch.targets)
        room = keep_attention - len(attention)
        if room > 0:
            maps = mean_attention[:room, 0].float().cpu().numpy()
            attention += list(zip(batch.indices[:room].tolist(), maps))
    if not probs:
        num_classes = unwrap(model).config.num_classes
        return Predictions(np.zeros((0, num_classes), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64), [])
    return Predictions(torch.cat(probs).numpy(), torch.cat(indices).numpy(), torch.cat(targets).numpy(), attention)
