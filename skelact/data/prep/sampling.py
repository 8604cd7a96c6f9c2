"""The one frame-sampling rule of every stream (skeleton, RGB, depth, cached features), so that
fused streams look at the same moments of a clip."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def clip_indices(
    total: int,
    length: int,
    train: bool = False,
    rng: np.random.Generator | None = None,
    num_clips: int = 1,
    crop: Sequence[float] = (1.0, 1.0),
) -> np.ndarray:
    """(K, length) frame indices in [0, total), one per equal segment.

    Training (K = 1): a random temporal crop keeping a fraction in `crop` of the clip, then a
    random frame in each segment of it. Test: segment centres, clip k shifted by
    (k + 0.5) / num_clips of a segment, K = num_clips. With total < length, frames repeat in
    order.
    """
    if total < 1 or length < 1:
        raise ValueError(f"frame sampling needs total >= 1 and length >= 1, got {total}, {length}")
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        span = max(1, int(round(total * rng.uniform(*crop))))
        start = rng.integers(0, total - span + 1)
        edges = np.linspace(0, span, length + 1)
        pos = edges[:-1] + rng.uniform(0, 1, length) * np.diff(edges)
        return (start + np.minimum(pos.astype(int), span - 1))[None]
    edges = np.linspace(0, total, length + 1)
    shifts = (np.arange(num_clips) + 0.5) / num_clips
    pos = edges[:-1][None] + shifts[:, None] * np.diff(edges)[None]
    return np.minimum(pos.astype(int), total - 1)


def sample_indices(
    total: int, num: int, train: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(num,) indices of one clip by `clip_indices` (no temporal crop)."""
    return clip_indices(total, num, train, rng)[0]
