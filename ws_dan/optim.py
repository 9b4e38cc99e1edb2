"""Optimizers: SGD and AdamW from PyTorch, and AdaBound (Luo et al., ICLR 2019), written for current PyTorch.

The ``adabound`` package on PyPI (0.0.5) calls ``Tensor.add_(scalar, tensor)`` and similar signatures that
PyTorch removed, so it fails on a current install; this is a re-implementation of its update rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Optional

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
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    raise ValueError(f"unknown learning-rate scheduler {name!r}; choose one of {SCHEDULERS}")


def step_scheduler(scheduler, val_loss: Optional[float] = None) -> None:
    """End-of-epoch step: ReduceLROnPlateau needs the validation loss, the others only count epochs."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


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
