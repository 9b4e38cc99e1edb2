"""Confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 70, 2021): which given labels are probably wrong, from out-of-sample class probabilities.

Pure numpy; the inputs are ``probs`` (N, K), each row the softmax of a model that did NOT train on that image
(see :mod:`data_tools.out_of_sample`), and ``labels`` (N,), the given (possibly noisy) class index of each image.
Notation as in the paper: ``y~`` the given label, ``y*`` the unknown true one, ``p_j(x)`` = ``probs[x, j]``.

1. Per-class thresholds (paper Eq. 1's ``t_j``): the model's average self-confidence on its own class,
   ``t_j = mean of p_j(x) over the images x labelled j``. A class the model finds hard gets a low bar.
2. The confident joint ``C[i][j]`` (Eq. 1): the number of images labelled ``i`` that are *confidently* of
   class ``j``: ``p_j(x) >= t_j``, and, when several classes clear their thresholds, ``j`` is the one of
   them with the largest probability. Images that clear no threshold are not counted.
3. Calibration (Eq. 2): the rows are rescaled to the label counts, ``C~[i][j] = C[i][j] / sum_j' C[i][j'] * n_i``,
   so ``C~ / N`` estimates the joint distribution ``Q[y~ = i, y* = j]`` and ``C~[i][j]`` (i != j) the number
   of images labelled ``i`` that truly are ``j``.
4. Which images to flag (paper Section 3.2), :func:`find_label_issues`:

   * ``prune_by_noise_rate`` (PBNR, the default, as in cleanlab): for every off-diagonal pair ``(i, j)``, the
     ``round(C~[i][j])`` images labelled ``i`` with the largest margin ``p_j(x) - p_i(x)``;
   * ``prune_by_class`` (PBC): for every class ``i``, the ``round(sum_{j != i} C~[i][j])`` images labelled ``i``
     with the lowest self-confidence ``p_i(x)``;
   * ``both``: flagged by PBNR and by PBC (the paper's C+NR);
   * ``confident_joint_offdiag`` (the paper's ``C_{y~,y*}``): the images counted off the diagonal of ``C``;
   * ``argmax_differs`` (the paper's ``C_confusion``, the simple baseline): the most probable class is not the
     given label.

   As in cleanlab, an image whose most probable class *is* its given label is never flagged, and pruning keeps
   at least one image of every class. The flagged images are returned ranked by self-confidence
   ``p_given(x)``, lowest (most suspicious) first, ties by index.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

#: The ways :func:`find_label_issues` can decide which images to flag (see the module docstring).
METHODS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_joint_offdiag", "argmax_differs")
#: Floating-point slack on ``p_j >= t_j`` (a probability equal to the threshold, up to rounding, clears it).
THRESHOLD_EPS = 1e-6


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inputs as float64 (N, K) and int64 (N,); ValueError with one line for anything else."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs: expected an (images, classes) matrix with at least 2 classes, got shape "
                         f"{probs.shape}")
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels: expected {probs.shape[0]} class indices (one per row of probs), got shape "
                         f"{labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels: expected class indices from 0 to {probs.shape[1] - 1}, found "
                         f"{labels.min()}..{labels.max()}")
    if not np.isfinite(probs).all():
        raise ValueError("probs: expected finite probabilities (drop the rows of images that could not be read)")
    return probs, labels


def per_class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``t_j = mean(p_j(x) for x labelled j)`` for each class ``j`` (paper Eq. 1), shape (K,).

    A class no image is labelled with gets ``inf``: without its own images there is no expected
    self-confidence, and no image can confidently belong to it (cleanlab uses a value above 1 likewise)."""
    probs, labels = _check(probs, labels)
    k = probs.shape[1]
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros(k)
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def confident_classes(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each image, the class ``y*`` it confidently belongs to, or -1 when no class clears its threshold.

    ``y*(x) = argmax_{j : p_j(x) >= t_j} p_j(x)`` (paper Eq. 1): the most probable class among those whose
    probability reaches the class's threshold. (cleanlab takes the plain argmax when 2+ classes clear their
    thresholds, which differs only when the overall argmax itself is below its threshold.)"""
    probs = np.asarray(probs, dtype=np.float64)
    above = probs >= np.asarray(thresholds, dtype=np.float64)[None, :] - THRESHOLD_EPS
    masked = np.where(above, probs, -np.inf)
    best = masked.argmax(axis=1) if probs.size else np.zeros(0, np.int64)
    return np.where(above.any(axis=1), best, -1).astype(np.int64)


def confident_joint(probs: np.ndarray, labels: np.ndarray, thresholds: Optional[np.ndarray] = None,
                    calibrate: bool = True) -> np.ndarray:
    """The confident joint ``C`` (K, K): rows the given label ``i``, columns the confident class ``j``.

    ``C[i][j] = |{x labelled i : y*(x) = j}|`` with ``y*`` from :func:`confident_classes` (paper Eq. 1), as
    integers when ``calibrate`` is False. Calibrated (the default, Eq. 2): each row rescaled to sum to ``n_i``,
    the number of images labelled ``i``, ``C~[i][j] = C[i][j] / sum_j' C[i][j'] * n_i`` (floats); a row in which
    no image was confident of any class gives no evidence of noise, and keeps its ``n_i`` on the diagonal.
    ``thresholds`` default to :func:`per_class_thresholds`."""
    probs, labels = _check(probs, labels)
    k = probs.shape[1]
    if thresholds is None:
        thresholds = per_class_thresholds(probs, labels)
    guess = confident_classes(probs, thresholds)
    counted = guess >= 0
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (labels[counted], guess[counted]), 1)
    if not calibrate:
        return joint
    n_per_class = np.bincount(labels, minlength=k).astype(np.float64)
    row_sums = joint.sum(axis=1).astype(np.float64)
    calibrated = np.diag(n_per_class)  # rows with nothing counted: no evidence of noise
    has = row_sums > 0
    calibrated[has] = joint[has] / row_sums[has, None] * n_per_class[has, None]
    return calibrated


def estimated_noise_rate(probs: np.ndarray, labels: np.ndarray) -> float:
    """The estimated share of wrong labels, ``sum_{i != j} Q[i][j] = 1 - trace(C~) / N`` (0 for no images)."""
    joint = confident_joint(probs, labels)
    total = joint.sum()
    return float(1.0 - np.trace(joint) / total) if total > 0 else 0.0


def round_preserving_row_sums(matrix: np.ndarray) -> np.ndarray:
    """Each row of non-negative floats rounded to integers with the same (rounded) row total (largest remainder:
    the entries with the largest fractional parts round up), so the flag counts add up to the estimate."""
    matrix = np.asarray(matrix, dtype=np.float64)
    floor = np.floor(matrix)
    out = floor.astype(np.int64)
    missing = (np.round(matrix.sum(axis=1)) - floor.sum(axis=1)).astype(np.int64)
    for r in range(matrix.shape[0]):
        if missing[r] > 0:
            order = np.argsort(-(matrix[r] - floor[r]), kind="stable")
            out[r, order[:missing[r]]] += 1
    return out


def _prune_counts(joint: np.ndarray, n_per_class: np.ndarray, keep: int) -> np.ndarray:
    """Integer numbers of images to flag per ``(given i, true j)``: ``C~`` rounded, the diagonal zeroed, and each
    row scaled down where it would leave fewer than ``keep`` images of class ``i`` unflagged."""
    counts = round_preserving_row_sums(joint)
    np.fill_diagonal(counts, 0)
    allowed = np.maximum(n_per_class - keep, 0)
    for i, total in enumerate(counts.sum(axis=1)):
        if total > allowed[i]:
            counts[i] = round_preserving_row_sums(counts[i:i + 1] * (allowed[i] / total))[0]
    return counts


def rank_by_self_confidence(probs: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``indices`` ordered by ``p_given`` = ``probs[x, labels[x]]``, lowest first (ties: lower index first)."""
    indices = np.unique(np.asarray(indices, dtype=np.int64))  # sorted: the stable sort breaks ties by index
    scores = np.asarray(probs)[indices, np.asarray(labels)[indices]]
    return indices[np.argsort(scores, kind="stable")]


def find_label_issues(probs: np.ndarray, labels: np.ndarray, method: str = "prune_by_noise_rate",
                      min_per_class: int = 1) -> np.ndarray:
    """Indices of the images whose given label is probably wrong, most suspicious (lowest ``p_given``) first.

    ``method``: one of :data:`METHODS` (see the module docstring for each rule). The pruning methods flag
    ``round(C~[i][j])`` images per off-diagonal cell of the calibrated confident joint but leave at least
    ``min_per_class`` images of every class unflagged. For every method, an image whose argmax is its given
    label is not flagged (the model agrees with the label, so it is not a confident error)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    probs, labels = _check(probs, labels)
    n, k = probs.shape
    if n == 0:
        return np.zeros(0, np.int64)
    predicted = probs.argmax(axis=1)
    flagged = np.zeros(n, dtype=bool)
    if method == "argmax_differs":
        flagged = predicted != labels
    elif method == "confident_joint_offdiag":
        guess = confident_classes(probs, per_class_thresholds(probs, labels))
        flagged = (guess >= 0) & (guess != labels)
    else:
        n_per_class = np.bincount(labels, minlength=k)
        counts = _prune_counts(confident_joint(probs, labels), n_per_class, min_per_class)
        by_noise = np.zeros(n, dtype=bool)
        by_class = np.zeros(n, dtype=bool)
        for i in range(k):
            members = np.flatnonzero(labels == i)
            if method in ("prune_by_noise_rate", "both"):
                for j in np.flatnonzero(counts[i]):
                    margin = probs[members, j] - probs[members, i]
                    by_noise[members[np.argsort(-margin, kind="stable")[:counts[i, j]]]] = True
            if method in ("prune_by_class", "both"):
                total = counts[i].sum()
                if total:
                    by_class[members[np.argsort(probs[members, i], kind="stable")[:total]]] = True
        flagged = {"prune_by_noise_rate": by_noise, "prune_by_class": by_class,
                   "both": by_noise & by_class}[method]
    flagged &= predicted != labels
    return rank_by_self_confidence(probs, labels, np.flatnonzero(flagged))


def suggested_labels(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each image, the most probable class other than its given label (what the label probably should be)."""
    probs, labels = _check(probs, labels)
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    return others.argmax(axis=1) if len(labels) else np.zeros(0, np.int64)
