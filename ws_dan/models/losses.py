"""Attention regularisation (WS-DAN eq. 6-7): the center loss and the moving-average feature centers."""

from __future__ import annotations

import torch


def center_loss(features: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """L_A = (1 / B) sum_i || f_i - c_{y_i} ||_2^2  (eq. 6), averaged over the batch.

    features: (B, D) feature matrices of the batch; centers: (B, D) the center of each image's class,
    treated as a constant (the centers are not trained by back-propagation).
    """
    return (features - centers.detach()).pow(2).sum(dim=1).mean()


@torch.no_grad()
def update_centers(centers: torch.Tensor, features: torch.Tensor, targets: torch.Tensor, beta: float) -> None:
    """Move each class center toward its images' features in place: c_y <- c_y + beta * mean_i(f_i - c_y) (eq. 7).

    Images of the same class in a batch contribute their mean difference, so the update is deterministic
    and independent of their order (the reference code's ``centers[y] += ...`` keeps only one of them).
    beta = 0.05 in the paper and its reference implementations.
    """
    delta, counts = center_update_sums(centers, features, targets)
    apply_center_update(centers, delta, counts, beta)


@torch.no_grad()
def center_update_sums(
    centers: torch.Tensor, features: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of (f_i - c_y) and image counts: the parts of the update that add up across processes."""
    diff = features.detach().to(centers.dtype) - centers[targets]
    delta = torch.zeros_like(centers).index_add_(0, targets, diff)
    counts = torch.zeros(centers.shape[0], device=centers.device, dtype=centers.dtype)
    counts.index_add_(0, targets, torch.ones_like(targets, dtype=centers.dtype))
    return delta, counts


@torch.no_grad()
def apply_center_update(centers: torch.Tensor, delta: torch.Tensor, counts: torch.Tensor, beta: float) -> None:
    """centers += beta * delta / count for every class that has at least one image."""
    centers.add_(beta * delta / counts.clamp_min(1).unsqueeze(1))
