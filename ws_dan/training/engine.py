"""The training loops: :func:`train_step` is the whole WS-DAN training step, top to bottom.

``train_one_epoch`` and ``evaluate`` (the validation pass) wrap it with a DataLoader, mixed precision and progress
bars; they take the model possibly wrapped (DataParallel / DistributedDataParallel) and reach the WS-DAN module
underneath with :func:`~ws_dan.evaluation.inference.unwrap` for its feature centers and config. Prediction without
training lives in :mod:`ws_dan.evaluation.inference`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ws_dan.data.datasets import Batch, SkipLog
from ws_dan.evaluation.inference import TOPK, autocast, topk_correct, unwrap
from ws_dan.models.attention import attention_crop, attention_drop, random_theta, raw_view, sample_attention_maps
from ws_dan.models.losses import apply_center_update, center_loss, center_update_sums
from ws_dan.training.distributed import all_reduce_sum
from ws_dan.training.optim import ClipStats, clip_gradients_


@dataclass
class StepConfig:
    """Hyper-parameters of the training step; defaults from the paper (section 3.3 and 4.1) and WS-DAN.PyTorch.

    crop_theta     theta_c drawn per image from this range (the paper sets 0.5; the reference code draws
                   from [0.4, 0.6] for variety)
    crop_padding   the crop box grows by this fraction of the image size on each side (reference code: 0.1)
    drop_theta     theta_d drawn per image from this range (paper 0.5; reference code [0.2, 0.5])
    beta           feature-center update rate (paper: 0.05)
    center_weight  weight of the center loss; the three cross-entropies are averaged (reference code)
    cal            add CAL's counterfactual-attention loss (Rao et al., ICCV 2021)
    cal_weight     its weight: 1, as in CAL's official code, where the loss is CE(raw)/3 + CE(crop, drop)*2/3
                   + CE(effect logits of raw, crop, drop)*1 + center loss
    class_weight   per-class cross-entropy weights (e.g. scikit-learn's "balanced"), or None
    label_smoothing  cross-entropy label smoothing
    accum_steps    gradient accumulation: an optimizer step every this many batches
    attention_views  train on the attention crop and drop views too; False: the raw view only (cross-entropy
                   and center loss). The maps are random at the start, so their crops and drops are noise
                   until the attention has learned something; train.py turns them on at --views-start-epoch
    clip_grad      gradient clipping before each optimizer step (0: none), by ``clip_mode``: the global norm's
                   cap ("norm"), the cap on the norm of lr x gradient ("step"), or lambda of adaptive clipping
                   ("agc"); ws_dan.training.optim.clip_gradients_. The norm is measured (and logged) in every case
    diverge_factor  stop with TrainingDiverged when a step's loss is non-finite or exceeds this many times
                   max(first loss, ln K) (K classes: the loss of a uniform guess); 0 disables the check
    """

    crop_theta: tuple[float, float] = (0.4, 0.6)
    crop_padding: float = 0.1
    drop_theta: tuple[float, float] = (0.2, 0.5)
    beta: float = 0.05
    center_weight: float = 1.0
    cal: bool = False
    cal_weight: float = 1.0
    class_weight: Optional[torch.Tensor] = None
    label_smoothing: float = 0.0
    accum_steps: int = 1  # micro-batches whose gradients add up before one optimizer step
    attention_views: bool = True
    clip_grad: float = 0.0
    clip_mode: str = "norm"
    diverge_factor: float = 5.0

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = None if self.class_weight is None else self.class_weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing)


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite or exploded; carries where, so the script can say what to try."""

    def __init__(self, epoch: int, step: int, loss: float, limit: float):
        self.epoch, self.step, self.loss, self.limit = epoch, step, loss, limit
        what = "non-finite" if not math.isfinite(loss) else f"{loss:.4g}, above the limit {limit:.4g}"
        super().__init__(f"training diverged at epoch {epoch}, step {step}: loss {what}")


class StepResult(NamedTuple):
    loss: torch.Tensor  # scalar, detached
    logits: dict[str, torch.Tensor]  # view name ("raw", "crop", "drop") -> (B, K) logits, detached
    grad: Optional[ClipStats] = None  # the optimizer step's gradient norm and clipping; None between steps


def _optimize(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler],
              cfg: StepConfig, step_now: bool = True) -> Optional[ClipStats]:
    """Backward, and an optimizer step when ``step_now``: with ``cfg.accum_steps`` > 1 the gradients of that many
    micro-batches add up (each loss divided by ``accum_steps``) before one step, as one large batch would give.
    Just before the step the gradients are measured and clipped (``cfg.clip_grad``, ``cfg.clip_mode``) on their
    true scale: the GradScaler's factor is removed first (``unscale_``, which ``scaler.step`` then skips). The
    GradScaler guards fp16 gradients. Returns the step's gradient statistics, None between steps."""
    if cfg.accum_steps > 1:
        loss = loss / cfg.accum_steps
    amp = scaler is not None and scaler.is_enabled()
    (scaler.scale(loss) if amp else loss).backward()
    if not step_now:
        return None
    if amp:
        scaler.unscale_(optimizer)
    stats = clip_gradients_(optimizer, cfg.clip_mode, cfg.clip_grad)
    if amp:
        scaler.step(optimizer)  # skipped when the gradients hold inf / NaN (the norm is then non-finite too)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return stats


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: StepConfig,
    scaler: Optional[torch.amp.GradScaler] = None,
    amp_dtype: Optional[torch.dtype] = None,
    step_now: bool = True,
) -> StepResult:
    """One WS-DAN step: three views, one loss, one backward, one optimizer step, then the center update.

    With ``cfg.accum_steps`` > 1 the optimizer steps only when ``step_now`` (the last micro-batch). ``images``
    are at the model's ``config.load_size``: with a detail copy (``detail_scale`` > 1) the network sees them
    box-filtered to the input size and the crops are cut from the copy."""
    net = unwrap(model)
    batch = images.shape[0]
    scale = net.config.detail_scale
    detail, images = (images if scale > 1 else None), raw_view(images, scale)
    ce = cfg.cross_entropy
    with autocast(images.device, amp_dtype):
        # 1. Raw images: classify, and pull each image's feature matrix toward its class center.
        raw = model(images, counterfactual=cfg.cal)
        centers = net.feature_centers[targets]  # a copy, taken before this batch moves the centers
        loss_center = center_loss(raw.features.float(), centers)
    if not cfg.attention_views:
        return _raw_only_step(model, raw, loss_center, targets, optimizer, cfg, scaler, step_now)
    with autocast(images.device, amp_dtype):
        # 2. Attention-guided augmentation: per image, two of the M maps sampled by their mass, one guiding
        #    the crop (zoom into the part), one the drop (erase the part, so another must be found).
        with torch.no_grad():
            maps = sample_attention_maps(raw.attention_maps, num_samples=2)
            theta_c = random_theta(batch, *cfg.crop_theta, device=images.device)
            crop_images = attention_crop(images, maps[:, :1], theta_c, cfg.crop_padding, source=detail)
            theta_d = random_theta(batch, *cfg.drop_theta, device=images.device)
            drop_images = attention_drop(images, maps[:, 1:], theta_d)

        # 3. Crop and drop views through the same network, as one batch of 2B images.
        aug = model(torch.cat([crop_images, drop_images]), counterfactual=cfg.cal)
        aug_targets = torch.cat([targets, targets])
        loss = ce(raw.logits, targets) / 3 + ce(aug.logits, aug_targets) * 2 / 3  # = mean of the 3 views' CE
        loss = loss + cfg.center_weight * loss_center
        if cfg.cal:
            effect = torch.cat([raw.effect_logits, aug.effect_logits])
            loss = loss + cfg.cal_weight * ce(effect, torch.cat([targets, aug_targets]))

    # 4. One backward and one optimizer step for the sum.
    grad = _optimize(loss, optimizer, scaler, cfg, step_now)

    # 5. Centers move toward this batch's features: c_y <- c_y + beta * mean(f - c_y). Under DDP the per-class
    #    sums and counts are added over all processes first, so every replica makes the same update.
    delta, counts = center_update_sums(net.feature_centers, raw.features.detach().float(), targets)
    apply_center_update(net.feature_centers, all_reduce_sum(delta), all_reduce_sum(counts), cfg.beta)
    crop_logits, drop_logits = aug.logits.detach().chunk(2)
    return StepResult(loss.detach(), {"raw": raw.logits.detach(), "crop": crop_logits, "drop": drop_logits}, grad)


def _raw_only_step(model: nn.Module, raw, loss_center: torch.Tensor, targets: torch.Tensor,
                   optimizer: torch.optim.Optimizer, cfg: StepConfig, scaler: Optional[torch.amp.GradScaler],
                   step_now: bool = True) -> StepResult:
    """WS-DAN before its attention views start: the raw view's cross-entropy (+ CAL's effect term) and the
    center loss, one backward; the centers move as in the full step."""
    net = unwrap(model)
    loss = cfg.cross_entropy(raw.logits, targets) + cfg.center_weight * loss_center
    if cfg.cal:
        loss = loss + cfg.cal_weight * cfg.cross_entropy(raw.effect_logits, targets)
    grad = _optimize(loss, optimizer, scaler, cfg, step_now)
    delta, counts = center_update_sums(net.feature_centers, raw.features.detach().float(), targets)
    apply_center_update(net.feature_centers, all_reduce_sum(delta), all_reduce_sum(counts), cfg.beta)
    return StepResult(loss.detach(), {"raw": raw.logits.detach()}, grad)


def baseline_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: StepConfig,
    scaler: Optional[torch.amp.GradScaler] = None,
    amp_dtype: Optional[torch.dtype] = None,
    step_now: bool = True,
) -> StepResult:
    """The plain classifier's step: one view, cross-entropy, one optimizer step."""
    with autocast(images.device, amp_dtype):
        logits = model(images).logits
        loss = cfg.cross_entropy(logits, targets)
    grad = _optimize(loss, optimizer, scaler, cfg, step_now)
    return StepResult(loss.detach(), {"raw": logits.detach()}, grad)


class _Meter:
    """Sums of loss and top-k hits kept on the device, so the loop does not synchronise every step; in training
    also the optimizer steps' gradient norms (mean and largest, before clipping) and how many were clipped."""

    def __init__(self, names: Iterable[str], device: torch.device):
        self.names = list(names)
        self.loss = torch.zeros((), device=device)
        self.hits = {n: torch.zeros(len(TOPK), device=device) for n in self.names}
        self.seen = {n: 0 for n in self.names}  # images per view: WS-DAN's crop/drop views may not run yet
        self.count = 0
        # finite norms' sum, their count (fp16 AMP's overflowing steps are skipped), steps clipped
        self.grad = torch.zeros(3, device=device)
        self.grad_max = torch.zeros((), device=device)
        self.steps = 0

    def update(self, loss: torch.Tensor, logits: dict[str, torch.Tensor], targets: torch.Tensor,
               grad: Optional[ClipStats] = None) -> None:
        n = targets.shape[0]
        self.loss += loss.float() * n
        for name, value in logits.items():
            self.hits[name] += topk_correct(value.float(), targets)
            self.seen[name] += n
        self.count += n
        if grad is not None:
            norm = grad.norm.float().to(self.grad.device)
            finite = torch.isfinite(norm)
            norm = torch.where(finite, norm, torch.zeros_like(norm))
            self.grad += torch.stack([norm, finite.float(), grad.clipped.float().to(self.grad.device)])
            self.grad_max = torch.maximum(self.grad_max, norm)
            self.steps += 1

    def result(self, prefix: str = "", reduce: bool = True) -> dict[str, float]:
        """Means over every image seen, by all processes together under DDP (sums reduced first; ``reduce=False``
        for this process alone, e.g. for rank 0's progress bar: a collective call must not depend on the rank).
        With optimizer steps seen: ``grad_norm`` (mean), ``grad_norm_max`` and ``clipped`` (% of steps); under
        DDP every process steps with the same all-reduced gradients, so their means are the same."""
        counts = [float(self.seen[n]) for n in self.names] + [float(self.steps), float(self.count)]
        sums = torch.cat([self.loss.view(1), *self.hits.values(), self.grad,
                          torch.tensor(counts, device=self.loss.device)])
        if reduce:
            sums = all_reduce_sum(sums.clone())
        k = len(self.names)
        total = int(sums[-1].item())
        steps = sums[-2].item()
        seen = sums[-2 - k:-2].tolist()
        values = sums[:-2 - k].tolist()
        out = {f"{prefix}loss": values[0] / total if total else math.nan}
        for i, name in enumerate(self.names):
            hits = values[1 + i * len(TOPK): 1 + (i + 1) * len(TOPK)]
            for kk, v in zip(TOPK, hits):  # NaN for a view that did not run (e.g. before --views-start-epoch)
                out[f"{prefix}{name + '_' if name else ''}top{kk}"] = v / seen[i] * 100 if seen[i] else math.nan
        out[f"{prefix}images"] = total
        if steps:
            norm_sum, finite, clipped = values[-3:]
            out[f"{prefix}grad_norm"] = norm_sum / finite if finite else math.nan
            out[f"{prefix}grad_norm_max"] = float(self.grad_max)  # this process's: the same on every one
            out[f"{prefix}clipped"] = clipped / steps * 100
        return out


class _DivergenceGuard:
    """Raise TrainingDiverged when a step's loss is non-finite or above factor x max(first loss, ln K).

    The flag is kept on the device and read every ``check_every`` steps (and at the end of the epoch), so a
    GPU does not synchronise at every step; a run that diverges stops within that many steps."""

    def __init__(self, factor: float, epoch: int, check_every: int = 5):
        self.factor, self.epoch, self.check_every = factor, epoch, check_every
        self.limit: Optional[float] = None
        self.bad_list: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.steps: list[int] = []

    def update(self, loss: torch.Tensor, num_classes: int, step: int) -> None:
        if self.factor <= 0:
            return
        loss = loss.detach().float()
        if self.limit is None:  # the first step sets the scale (one synchronisation per epoch)
            first = float(loss.item())
            self.limit = self.factor * max(first if math.isfinite(first) else 0.0, math.log(max(num_classes, 2)))
        bad = ~torch.isfinite(loss) | (loss > self.limit)
        self.bad_list.append(bad.view(1))
        self.losses.append(loss.view(1))
        self.steps.append(step)
        if len(self.steps) >= self.check_every:
            self.check()

    def check(self) -> None:
        if not self.steps:
            return
        bad = torch.cat(self.bad_list)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise TrainingDiverged(self.epoch, self.steps[i] + 1, float(torch.cat(self.losses)[i]), float(self.limit))
        self.bad_list, self.losses, self.steps = [], [], []


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    cfg: StepConfig,
    device: torch.device,
    epoch: int,
    scaler: Optional[torch.amp.GradScaler] = None,
    amp_dtype: Optional[torch.dtype] = None,
    skip_log: Optional[SkipLog] = None,
    progress: bool = True,
    refresh_every: int = 10,
    channels_last: bool = False,
) -> dict[str, float]:
    """Train for one pass over ``loader``; returns mean loss and top-1/3/5 (%) of each view (raw, crop, drop;
    the baseline has only raw) and the number of images, over all processes under DDP."""
    model.train()
    baseline = unwrap(model).config.method == "baseline"
    step_fn = baseline_step if baseline else train_step
    meter = _Meter(["raw"] if baseline else ["raw", "crop", "drop"], device)
    bar = tqdm(loader, desc=f"train {epoch}", disable=not progress, dynamic_ncols=True, leave=False)
    total = len(loader) if hasattr(loader, "__len__") else None
    optimizer.zero_grad(set_to_none=True)
    guard = _DivergenceGuard(cfg.diverge_factor, epoch)
    for step, batch in enumerate(bar):
        if skip_log is not None:
            skip_log.add(batch.failed)
        if batch.images is None or batch.images.shape[0] < 2:  # batch norm needs two images in training
            continue
        images = batch.images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = batch.targets.to(device, non_blocking=True)
        # Gradient accumulation: step on every accum_steps-th batch and on the last one. Between steps DDP
        # need not all-reduce gradients (no_sync), which is where accumulation saves communication.
        step_now = (step + 1) % cfg.accum_steps == 0 or (total is not None and step + 1 == total)
        sync = contextlib.nullcontext() if step_now or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            result = step_fn(model, images, targets, optimizer, cfg, scaler, amp_dtype, step_now)
        meter.update(result.loss, result.logits, targets, result.grad)
        guard.update(result.loss, result.logits["raw"].shape[1], step)
        if progress and step % refresh_every == 0:
            r = meter.result(reduce=False)
            bar.set_postfix(loss=f"{r['loss']:.3f}", **{v: f"{r[v + '_top1']:.1f}" for v in meter.names})
    guard.check()
    if meter.count == 0:
        raise RuntimeError("no training batch could be formed: every image failed to load (see the warnings)")
    return meter.result()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    skip_log: Optional[SkipLog] = None,
    progress: bool = True,
    desc: str = "eval",
    cfg: Optional[StepConfig] = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Validation loss and top-1/3/5 (%) of the inference logits (raw + attention crop, averaged) and the number
    of images; under DDP each process sees its shard (ShardSampler) and the sums are reduced, so every image
    counts once."""
    model.eval()
    meter = _Meter([""], device)
    for batch in tqdm(loader, desc=desc, disable=not progress, dynamic_ncols=True, leave=False):
        if skip_log is not None:
            skip_log.add(batch.failed)
        if batch.images is None:
            continue
        images = batch.images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = batch.targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits, _ = unwrap(model).predict_logits(images)
        loss = (cfg or StepConfig()).cross_entropy(logits.float(), targets)
        meter.update(loss, {"": logits}, targets)
    return meter.result()
