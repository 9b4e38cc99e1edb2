"""Classification metrics from predicted probabilities, computed by scikit-learn where it has them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


@dataclass
class Report:
    summary: dict  # top1/top3/top5 (%), macro precision / recall / F1
    per_class: list[dict]  # one row per class: support, correct, precision, recall, f1
    confusion: np.ndarray  # (K, K), rows true, columns predicted


def classification_report(targets: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> Report:
    """Top-k accuracy and macro precision / recall / F1 (scikit-learn's definitions: the macro average runs
    over the classes present in the labels or the predictions, and 0/0 counts as 0)."""
    targets = np.asarray(targets)
    num_classes = len(class_names)
    labels = np.arange(num_classes)
    predicted = probabilities.argmax(axis=1)
    # Top-k by rank (stable sort: ties go to the lower class index, as argmax does for top-1).
    ranked = np.argsort(-probabilities, axis=1, kind="stable")
    summary = {f"top{k}": 100.0 * float((ranked[:, :k] == targets[:, None]).any(axis=1).mean()) for k in (1, 3, 5)}
    p, r, f, _ = precision_recall_fscore_support(targets, predicted, average="macro", zero_division=0)
    summary.update(precision_macro=float(p), recall_macro=float(r), f1_macro=float(f))
    pc, rc, fc, support = precision_recall_fscore_support(targets, predicted, labels=labels, zero_division=0)
    cm = confusion_matrix(targets, predicted, labels=labels)
    per_class = [
        {"class": name, "support": int(support[i]), "correct": int(cm[i, i]), "precision": round(float(pc[i]), 6),
         "recall": round(float(rc[i]), 6), "f1": round(float(fc[i]), 6)}
        for i, name in enumerate(class_names)
    ]
    return Report(summary, per_class, cm)
