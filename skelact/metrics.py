"""Classification metrics over a whole evaluation split."""

from __future__ import annotations

import numpy as np


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """Fraction of samples whose label is among the k highest scores. scores (N, K).

    None when there are at most k classes: every label is then in the top k, and a 1.0 would
    say nothing.
    """
    if scores.shape[1] <= k and k > 1:
        return None
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Recall averaged over the classes that occur in the labels."""
    support = cm.sum(1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean())


def summarize(scores: np.ndarray, labels: np.ndarray, cm: np.ndarray | None = None) -> dict:
    """top1, top5 (None with 5 classes or fewer), mean_class_accuracy (fractions in 0..1) and
    num_samples. `cm`: the confusion matrix of these scores, when the caller has it."""
    if cm is None:
        cm = confusion_matrix(labels, scores.argmax(1), scores.shape[1])
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_accuracy": mean_class_accuracy(cm),
        "num_samples": int(len(labels)),
    }
