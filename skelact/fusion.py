"""How much to trust each modality, learnt from the training data only.

A model of several modalities (the skeleton streams, depth, RGB) fused as an ensemble averages
each modality's probabilities with a weight (`Recognizer.group_weights`). Equal weights let a
weak image stream pull a strong skeleton ensemble down; the weights are therefore fit:

1. carve a development split from the training split (`carve_dev`: whole subjects held out
   when the samples name their subject, else a stratified quarter), or, with
   `model.fusion_folds=K`, split the training split into K folds (`carve_folds`: groups of
   whole subjects, else stratified) that are each held out in turn;
2. train the same model on the rest and score the development samples, per stream (with K
   folds every training sample is scored once, by the run that did not see it);
3. pick the weights that classify the development samples best, the lowest log-loss among
   equals (`fit_group_weights`, a grid over the simplex, which includes "skeleton only"); a
   mix is kept only if it gets at least `min_gain` (2) more development samples right than the
   best modality alone, else that modality alone: a one-sample gain is noise, and a small
   weight fit on it cost test samples (BENCHMARKS.md, issue 16).

`skelact train` then trains on the whole training split and fuses with those weights.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("skelact")

DEV_TRAIN, DEV_VAL = "fusion_dev_train", "fusion_dev_val"  # names of the carved splits


def stream_group(stream: str) -> str:
    """The modality of a stream: every skeleton_* stream is "skeleton"."""
    return "skeleton" if stream.startswith("skeleton") else stream


def groups_of(streams) -> dict[str, list[str]]:
    """{modality: its streams}, in the order the streams come."""
    out: dict[str, list[str]] = {}
    for s in streams:
        out.setdefault(stream_group(s), []).append(s)
    return out


def carve_dev(samples, seed: int = 0, fraction: float = 0.25) -> np.ndarray:
    """A development subset of `samples` (a sequence of sample mappings): positions (K,).

    With a "subject" field: every sample of the last quarter of the subjects (sorted; at least
    one, the rest must keep one), so the development score is cross-subject like the test
    protocols. Otherwise `fraction` of each class, drawn with `seed`.
    """
    subjects = [s.get("subject") for s in samples]
    known = sorted({s for s in subjects if s is not None})
    if len(known) >= 2 and None not in subjects:
        held = set(known[-max(1, round(len(known) * fraction)) :])
        return np.array([i for i, s in enumerate(subjects) if s in held], np.int64)
    rng = np.random.default_rng(seed)
    labels = np.array([int(s["label"]) for s in samples])
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.extend(rng.choice(idx, int(round(len(idx) * fraction)), replace=False).tolist())
    return np.sort(np.array(picked, np.int64))


def carve_folds(samples, folds: int, seed: int = 0) -> list[np.ndarray]:
    """`folds` disjoint development subsets of `samples` that together cover them: positions.

    folds <= 1: the one split of `carve_dev`. With a "subject" field the sorted subjects are
    cut into min(folds, subjects) consecutive groups, each held out whole; otherwise each
    class is shuffled with `seed` and dealt round the folds (stratified).
    """
    if folds <= 1:
        return [carve_dev(samples, seed)]
    subjects = [s.get("subject") for s in samples]
    known = sorted({s for s in subjects if s is not None})
    if len(known) >= 2 and None not in subjects:
        groups = [set(h) for h in np.array_split(np.array(known, dtype=object), folds)]
        return [np.array([i for i, s in enumerate(subjects) if s in g], np.int64)
                for g in groups if g]  # fmt: skip
    rng = np.random.default_rng(seed)
    labels = np.array([int(s["label"]) for s in samples])
    fold_of = np.empty(len(labels), np.int64)
    start = 0  # where the next class starts dealing, so the folds stay within one sample
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold_of[idx] = (start + np.arange(len(idx))) % folds
        start = (start + len(idx)) % folds
    return [np.flatnonzero(fold_of == k) for k in range(folds)]


def simplex_grid(groups: int, step: float) -> np.ndarray:
    """Every weight vector of `groups` non-negative multiples of `step` summing to 1: (W, G)."""
    n = int(round(1 / step))
    rows = [c for c in itertools.product(range(n + 1), repeat=groups) if sum(c) == n]
    return np.array(rows, np.float64) / n


def group_probs(stream_scores: dict[str, np.ndarray], groups: dict[str, list[str]]) -> np.ndarray:
    """Per-stream probabilities {stream: (N, classes)} -> per modality, averaged: (G, N, C)."""
    return np.stack([np.mean([stream_scores[s] for s in ss], 0) for ss in groups.values()])


def fit_group_weights(
    stream_scores: dict[str, np.ndarray],
    labels: np.ndarray,
    groups: dict[str, list[str]],
    min_gain: int = 2,
) -> tuple[dict[str, float], dict]:
    """The modality weights that fuse the development scores best.

    Accuracy first; among weights of equal accuracy the lowest log-loss. A mix of modalities
    must classify at least `min_gain` more samples right than the best modality alone (chosen
    the same way among the one-modality weights), else that modality alone is returned.
    Returns {modality: weight} and a report: the chosen weights' accuracy and each modality's
    own accuracy.
    """
    probs = group_probs(stream_scores, groups)  # (G, N, C)
    grid = simplex_grid(len(groups), 0.05 if len(groups) <= 2 else 0.1)  # (W, G)
    fused = np.einsum("wg,gnc->wnc", grid, probs)  # (W, N, C)
    acc = (fused.argmax(-1) == labels).mean(1)  # (W,)
    nll = -np.log(np.take_along_axis(fused, labels[None, :, None], 2)[..., 0] + 1e-9).mean(1)
    best = np.flatnonzero(acc >= acc.max() - 1e-12)
    pick = best[np.argmin(nll[best])]
    alone = np.flatnonzero(grid.max(1) == 1.0)  # one modality with all the weight
    alone = alone[acc[alone] >= acc[alone].max() - 1e-12]
    alone = alone[np.argmin(nll[alone])]
    if round((acc[pick] - acc[alone]) * len(labels)) < min_gain:
        pick = alone
    weights = {g: round(float(w), 4) for g, w in zip(groups, grid[pick], strict=True)}
    own = {g: float((p.argmax(-1) == labels).mean()) for g, p in zip(groups, probs, strict=True)}
    report = {
        "weights": weights,
        "dev_top1": float(acc[pick]),
        "dev_top1_per_modality": own,
        "dev_samples": int(len(labels)),
    }
    return weights, report


def read_stream_scores(run_dir: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The per-stream probabilities and labels an evaluation wrote into `run_dir`."""
    with np.load(Path(run_dir) / "stream_scores.npz") as z:
        scores = {k: z[k] for k in z.files if k != "__labels__"}
        return scores, z["__labels__"]


def wants_fit(cfg) -> bool:
    """model.fusion_weights=fit, fused as an ensemble, with more than one modality."""
    return (
        cfg.model.get("fusion_weights", "equal") == "fit"
        and cfg.model.fusion == "ensemble"
        and len(groups_of(cfg.modality.streams)) > 1
    )
