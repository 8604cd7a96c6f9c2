"""Classification metrics over a whole evaluation split.

One ranking rule for every number: `rank_classes`. A NaN score (a diverged model) ranks below
every finite one, so top-1, top-5, the confusion matrix and predictions.csv always agree.
"""

from __future__ import annotations

import numpy as np


def rank_classes(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """(N, k) class indices of each row of scores (N, K), highest first (all K if k is None).

    NaN ranks last; ties keep the lower class index first (a stable sort).
    """
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-keyed, axis=1, kind="stable")
    return order if k is None else order[:, :k]


def predictions(scores: np.ndarray) -> np.ndarray:
    """(N,) the top-ranked class of each row of scores (N, K)."""
    return rank_classes(scores, 1)[:, 0]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """Fraction of samples whose label is among the k highest scores. scores (N, K).

    None when there are at most k classes: every label is then in the top k, and a 1.0 would
    say nothing.
    """
    if scores.shape[1] <= k and k > 1:
        return None
    top = rank_classes(scores, k)
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
        cm = confusion_matrix(labels, predictions(scores), scores.shape[1])
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_accuracy": mean_class_accuracy(cm),
        "num_samples": int(len(labels)),
    }
