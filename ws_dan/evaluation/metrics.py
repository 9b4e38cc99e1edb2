"""Classification metrics from predicted probabilities, computed by scikit-learn where it has them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ws_dan.evaluation.inference import topk_correct


@dataclass
class Scores:
    summary: dict  # top1/top3/top5 (%), macro precision / recall / F1
    per_class: list[dict]  # one row per class: support, correct, precision, recall, f1
    confusion: np.ndarray  # (K, K), rows true, columns predicted


def classification_scores(targets: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> Scores:
    """Top-k accuracy and macro precision / recall / F1 (scikit-learn's definitions: the macro average runs
    over the classes present in the labels or the predictions, and 0/0 counts as 0)."""
    targets = np.asarray(targets)
    num_classes = len(class_names)
    labels = np.arange(num_classes)
    predicted = probabilities.argmax(axis=1)
    # Top-k by the training loop's own counter, so predict.py and train.py's validation count alike.
    ks = (1, 3, 5)
    hits = topk_correct(torch.from_numpy(np.asarray(probabilities, dtype=np.float32)),
                        torch.from_numpy(targets.astype(np.int64)), ks)
    summary = {f"top{k}": 100.0 * float(h) / max(len(targets), 1) for k, h in zip(ks, hits.tolist())}
    p, r, f, _ = precision_recall_fscore_support(targets, predicted, average="macro", zero_division=0)
    summary.update(precision_macro=float(p), recall_macro=float(r), f1_macro=float(f))
    pc, rc, fc, support = precision_recall_fscore_support(targets, predicted, labels=labels, zero_division=0)
    cm = confusion_matrix(targets, predicted, labels=labels)
    per_class = [
        {"class": name, "support": int(support[i]), "correct": int(cm[i, i]), "precision": round(float(pc[i]), 6),
         "recall": round(float(rc[i]), 6), "f1": round(float(fc[i]), 6)}
        for i, name in enumerate(class_names)
    ]
    return Scores(summary, per_class, cm)


def rank_classes(probabilities: np.ndarray, k: int) -> np.ndarray:
    """(N, min(k, classes)) class indices by falling probability; ties go to the lower class index (a stable
    sort), as argmax does, so ``predicted`` always equals the argmax of probabilities.npy."""
    k = min(int(k), probabilities.shape[1])
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
