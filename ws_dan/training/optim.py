"""Optimizers: SGD and AdamW from PyTorch, and AdaBound (Luo et al., ICLR 2019), written for current PyTorch.

The ``adabound`` package on PyPI (0.0.5) calls ``Tensor.add_(scalar, tensor)`` and similar signatures that
PyTorch removed, so it fails on a current install; this is a re-implementation of its update rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple, Optional

import torch
from torch.optim import Optimizer

OPTIMIZERS = ("sgd", "adamw", "adabound")
SCHEDULERS = ("plateau", "cosine", "step")


class AdaBound(Optimizer):
    """AdaBound: Adam whose per-parameter step size is clipped into bounds that converge to SGD's.

    With m_t, v_t Adam's moment estimates (bias-corrected through the step size, as in the paper's code):

        eta_t   = lr * sqrt(1 - beta2^t) / (1 - beta1^t) / (sqrt(v_t) + eps)
        lower_t = final_lr * (1 - 1 / (gamma * t + 1)),   upper_t = final_lr * (1 + 1 / (gamma * t))
        p_t     = p_{t-1} - clip(eta_t, lower_t, upper_t) * m_t

    ``final_lr`` scales with the current ``lr`` relative to the initial one, so learning-rate schedules act on
    both phases. ``weight_decay`` is L2 (added to the gradient), as in the original; ``amsbound`` uses the
    running maximum of v_t.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 final_lr: float = 0.1, gamma: float = 1e-3, eps: float = 1e-8, weight_decay: float = 0.0,
                 amsbound: bool = False):
        if lr <= 0 or final_lr <= 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or gamma <= 0:
            raise ValueError(f"invalid AdaBound settings: lr={lr}, final_lr={final_lr}, betas={betas}, gamma={gamma}")
        defaults = dict(lr=lr, betas=betas, final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=weight_decay,
                        amsbound=amsbound)
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdaBound does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsbound"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if group["amsbound"]:
                    torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                    denom = state["max_exp_avg_sq"].sqrt().add_(group["eps"])
                else:
                    denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                final_lr = group["final_lr"] * group["lr"] / group["initial_lr"]
                lower = final_lr * (1 - 1 / (group["gamma"] * t + 1))
                upper = final_lr * (1 + 1 / (group["gamma"] * t))
                update = torch.full_like(denom, step_size).div_(denom).clamp_(lower, upper).mul_(exp_avg)
                p.sub_(update)
        return loss


def build_optimizer(name: str, params: Iterable, lr: float, momentum: float = 0.9,
                    weight_decay: float = 0.0, final_lr: float = 0.1) -> Optimizer:
    """``sgd`` (momentum), ``adamw`` (decoupled weight decay) or ``adabound``."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adabound":
        return AdaBound(params, lr=lr, final_lr=final_lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def build_scheduler(name: str, optimizer: Optimizer, epochs: int, gamma: Optional[float] = None,
                    patience: int = 3, step_size: int = 2) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule, stepped once per epoch (see :func:`step_scheduler`).

    plateau  lr x ``gamma`` (default 0.1) after ``patience`` epochs without a lower validation loss (the
             reference project's choice)
    step     lr x ``gamma`` (default 0.9) every ``step_size`` epochs (WS-DAN.PyTorch: 0.9 every 2)
    cosine   lr_t = lr_0 (1 + cos(pi t / epochs)) / 2, down to 0 at the last epoch
    """
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=gamma or 0.1,
                                                          patience=patience)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma or 0.9)
    if name == "cosine":
        return CosineSchedule(optimizer, epochs)
    raise ValueError(f"unknown learning-rate scheduler {name!r}; choose one of {SCHEDULERS}")


class CosineSchedule(torch.optim.lr_scheduler.LambdaLR):
    """Cosine annealing over ``epochs``, in closed form: epoch t (0-based) runs at lr_0 (1 + cos(pi t / epochs)) / 2.

    Unlike ``CosineAnnealingLR``'s recursive update, the rate depends only on t and the budget, so a run resumed
    with a larger ``--epochs`` follows the new budget's curve from where it stopped (the checkpoint's rate, which
    may already be 0, is not carried over), and a run split by a resume ends bit for bit where an unbroken one
    does. The state is the epoch count and the base rates (plain values, as ``weights_only`` loading needs)."""

    def __init__(self, optimizer: Optimizer, epochs: int):
        self.epochs = max(int(epochs), 1)
        super().__init__(optimizer, self.factor)

    def factor(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "_step_count": self._step_count}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the epoch count and base rates (from this class or an older run's ``CosineAnnealingLR``) and
        set each group's rate for the current epoch of *this* schedule."""
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = [float(v) for v in state_dict["base_lrs"]]
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def step_scheduler(scheduler, val_loss: Optional[float] = None) -> None:
    """End-of-epoch step: ReduceLROnPlateau needs the validation loss, the others only count epochs."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


def param_groups(model: torch.nn.Module, lr: float, head_lr_scale: float = 1.0,
                 backbone_prefix: str = "features.") -> list[dict]:
    """Two parameter groups: the pretrained backbone (names starting with ``backbone_prefix``) at ``lr``, and
    the layers new to the task (attention conv and BN, classifier) at ``lr * head_lr_scale``.

    Why: fine-tuning wants a gentle step for ImageNet features and a larger one for freshly initialised layers
    (e.g. Kornblith et al. 2019; CAL's official recipe trains its head at 10x). With WS-DAN's logit scale s the
    classifier's logits move by ~ lr * s^2 * |f|^2 per unit gradient, so its learning rate is also where the
    scale's side effect is tamed. One group (the old layout, which old checkpoints' optimizer state has) when
    ``head_lr_scale`` is 1; empty groups are left out.
    """
    if head_lr_scale <= 0 or lr <= 0:
        raise ValueError(f"lr and head_lr_scale must be positive, got lr={lr}, head_lr_scale={head_lr_scale}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if head_lr_scale == 1.0:
        return [{"params": [p for _, p in params], "lr": lr, "name": "all"}]
    backbone = [p for n, p in params if n.startswith(backbone_prefix)]
    head = [p for n, p in params if not n.startswith(backbone_prefix)]
    groups = [{"params": backbone, "lr": lr, "name": "backbone"},
              {"params": head, "lr": lr * head_lr_scale, "name": "head"}]
    return [g for g in groups if g["params"]]


class LinearWarmup:
    """Linear learning-rate warm-up over the first ``warmup_steps`` optimizer steps, on top of any scheduler.

    At step t (0-based) every group's rate is multiplied by (t + 1) / warmup_steps for the duration of
    ``optimizer.step()`` only (step pre/post hooks), so the epoch schedulers (cosine's recursive formula
    included) never see a changed ``lr`` and resuming needs only the step count (``start_step``).
    Why: the first steps see random new layers and large gradients; a ramp keeps them from wrecking the
    pretrained features at a learning rate that is right later (Goyal et al. 2017).
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, start_step: int = 0):
        self.warmup_steps = int(warmup_steps)
        self.step_count = int(start_step)
        self._saved: list[float] = []
        self._handles = []
        if self.warmup_steps > 0:
            self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    def factor(self, step: Optional[int] = None) -> float:
        """The multiplier at ``step`` (default: the next step)."""
        step = self.step_count if step is None else step
        return 1.0 if self.warmup_steps <= 0 else min(1.0, (step + 1) / self.warmup_steps)

    def _pre(self, optimizer: Optimizer, args, kwargs) -> None:
        f = self.factor()
        self._saved = [g["lr"] for g in optimizer.param_groups]
        for g in optimizer.param_groups:
            g["lr"] = g["lr"] * f

    def _post(self, optimizer: Optimizer, args, kwargs) -> None:
        for g, lr in zip(optimizer.param_groups, self._saved):
            g["lr"] = lr
        self.step_count += 1

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def balanced_class_weights(targets: Iterable[int], num_classes: int) -> torch.Tensor:
    """scikit-learn's ``class_weight="balanced"``: n_samples / (n_classes * count(class)).

    Classes with no training image get weight 0 (they cannot appear as targets anyway)."""
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    targets = np.asarray(list(targets))
    present = np.unique(targets)
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = compute_class_weight("balanced", classes=present, y=targets)
    return torch.tensor(weights, dtype=torch.float32)


CLIP_MODES = ("norm", "step", "agc")


class ClipStats(NamedTuple):
    """What one optimizer step's gradients looked like, as 0-dim tensors on their device (reading them is a
    synchronisation, so the training loop sums them and reads once per epoch)."""

    norm: torch.Tensor  # the global L2 norm of all gradients, before clipping
    clipped: torch.Tensor  # 1.0 if the clipping changed them, else 0.0


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """The norm of each output unit (row of a weight, over all its other dimensions); vectors and scalars as a
    whole. Shaped to broadcast against ``x``."""
    if x.ndim <= 1:
        return x.norm(2)
    return x.norm(2, dim=tuple(range(1, x.ndim)), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(parameters: Iterable[torch.Tensor], clip_factor: float, eps: float = 1e-3) -> torch.Tensor:
    """Adaptive gradient clipping (Brock et al., "High-Performance Large-Scale Image Recognition Without
    Normalization", ICML 2021, eq. 3), in place, unit by unit:

        G_i <- lambda * max(||W_i||, eps) / ||G_i|| * G_i    if ||G_i|| / max(||W_i||, eps) > lambda

    so no step changes a unit's weights by more than about lr x lambda of their norm, whatever the learning rate:
    large steps cannot wipe out the pretrained features, while small gradients pass untouched. Returns 1.0 (a
    0-dim tensor) if any unit was clipped, else 0.0."""
    hits = []
    for p in parameters:
        if p.grad is None:
            continue
        w_norm = unitwise_norm(p.detach()).clamp_min(eps)
        g_norm = unitwise_norm(p.grad.detach())
        max_norm = w_norm * clip_factor
        scale = (max_norm / g_norm.clamp_min(1e-6)).clamp(max=1.0)
        p.grad.mul_(scale)
        hits.append((scale < 1.0).any().to(w_norm.device))
    return torch.stack(hits).any().float() if hits else torch.zeros(())


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``tensors`` together, in float32 (torch.nn.utils.get_total_norm, which torch < 2.6 lacks)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors]))


def _scale_to_(params: list[torch.Tensor], cap: float, size: torch.Tensor) -> None:
    """Multiply every gradient by min(1, cap / size), without a synchronisation (clip_grad_norm_'s rule)."""
    coef = (cap / (size + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(coef.to(p.grad.device, p.grad.dtype))


@torch.no_grad()
def clip_gradients_(optimizer: Optimizer, mode: str, value: float) -> ClipStats:
    """Clip the gradients of every parameter ``optimizer`` updates, in place, and say what they were.

    ``norm``: the global L2 norm to ``value`` (as torch's clip_grad_norm_). ``agc``: adaptive clipping with ``value``
    as lambda. ``step``: the norm of the SGD step lr x G to ``value``, i.e. G <- G * min(1, value / ||(lr_g G_g)_g||),
    every parameter group at its own rate (``group["lr"]`` as the scheduler set it; a warm-up's factor is applied
    later, inside ``optimizer.step()``, so during warm-up this is the full-rate step). It is the update-clipping
    idea of Adafactor (Shazeer & Stern 2018) on the global step; momentum still adds up steps. Unlike a cap on
    ||G||, it does not depend on the learning rate: a cap on the gradient's norm that leaves lr 0.01 alone lets
    lr 0.05 take 5x larger steps, while this cap takes the same largest step at any rate, and a step below it is
    never touched. ``value`` 0: nothing is clipped. The gradients' global norm is measured in every mode (for the
    training log), from the same per-group norms the step's size is made of."""
    if mode not in CLIP_MODES:
        raise ValueError(f"clip mode: expected one of {CLIP_MODES}, got {mode!r}")
    groups = [(g["lr"], [p for p in g["params"] if p.grad is not None]) for g in optimizer.param_groups]
    groups = [(lr, ps) for lr, ps in groups if ps]
    if not groups:
        return ClipStats(torch.zeros(()), torch.zeros(()))
    params = [p for _, ps in groups for p in ps]
    group_norms = torch.stack([_global_norm([p.grad for p in ps]) for _, ps in groups])
    norm = torch.linalg.vector_norm(group_norms)
    clipped = torch.zeros((), device=norm.device)
    if value > 0 and mode == "norm":
        _scale_to_(params, value, norm)
        clipped = (norm > value).float()
    elif value > 0 and mode == "step":
        size = torch.linalg.vector_norm(group_norms * group_norms.new_tensor([lr for lr, _ in groups]))
        _scale_to_(params, value, size)
        clipped = (size > value).float()
    elif value > 0 and mode == "agc":
        clipped = adaptive_clip_grad_(params, value).to(norm.device)
    return ClipStats(norm, clipped)
