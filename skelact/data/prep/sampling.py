"""The one frame-sampling rule of every stream (skeleton, RGB, depth, cached features), so that
fused streams look at the same moments of a clip."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def clip_positions(
    total: int,
    length: int,
    train: bool = False,
    rng: np.random.Generator | None = None,
    num_clips: int = 1,
    crop: Sequence[float] = (1.0, 1.0),
) -> tuple[int, np.ndarray, int]:
    """The moments `clip_indices` samples, before they become frames: (start, pos, last) with
    pos (K, length) times in frame units from `start` (frame start + i covers [i, i + 1)) and
    `last` the last frame of the kept span, counted from `start`."""
    if total < 1 or length < 1:
        raise ValueError(f"frame sampling needs total >= 1 and length >= 1, got {total}, {length}")
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        span = max(1, int(round(total * rng.uniform(*crop))))
        start = int(rng.integers(0, total - span + 1))
        edges = np.linspace(0, span, length + 1)
        pos = edges[:-1] + rng.uniform(0, 1, length) * np.diff(edges)
        return start, pos[None], span - 1
    edges = np.linspace(0, total, length + 1)
    shifts = (np.arange(num_clips) + 0.5) / num_clips
    pos = edges[:-1][None] + shifts[:, None] * np.diff(edges)[None]
    return 0, pos, total - 1


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
    order (`interpolate_frames` blends them instead).
    """
    return frames_at(*clip_positions(total, length, train, rng, num_clips, crop))


def frames_at(start: int, pos: np.ndarray, last: int) -> np.ndarray:
    """The frame each moment of `clip_positions` falls in: (K, length) indices."""
    return start + np.minimum(pos.astype(int), last)


def present(kp: np.ndarray) -> np.ndarray:
    """(..., M, T) bool: the body-frames of kp (..., M, T, V, C) that hold any non-zero
    coordinate; every step takes an all-zero body-frame to be absent."""
    return np.abs(kp).sum((-1, -2)) > 0


def interpolate_frames(kp: np.ndarray, start: int, pos: np.ndarray, last: int) -> np.ndarray:
    """kp (M, T, V, C) at the times of `clip_positions`, blended linearly between the two
    nearest frames (frame i is taken to sit at i + 0.5): (K, M, length, V, C). Where a body is
    absent from either frame, its nearer frame is taken as it is, so no body is half there."""
    t = np.clip(pos - 0.5, 0.0, last)  # (K, L), from start
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, last)
    w = (t - lo)[None, ..., None, None]  # (1, K, L, 1, 1)
    a, b = kp[:, start + lo], kp[:, start + hi]  # (M, K, L, V, C)
    here = present(kp)  # (M, T)
    both = (here[:, start + lo] & here[:, start + hi])[..., None, None]
    nearest = np.where(w < 0.5, a, b)
    out = np.where(both, (1 - w) * a + w * b, nearest)
    return np.moveaxis(out, 1, 0).astype(kp.dtype)


def sample_indices(
    total: int, num: int, train: bool = False, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(num,) indices of one clip by `clip_indices` (no temporal crop)."""
    return clip_indices(total, num, train, rng)[0]
