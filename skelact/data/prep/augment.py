"""Training augmentation of skeletons: random rotation, scale, shear, view drift, jitter and
mirror images; and the turned views of test-time augmentation.

A dict -> dict callable like the transforms; its randomness comes only from results["rng"].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skelact.config import is_number

Results = dict


# data.skeleton.augment's numeric keys, each >= 0: its upper bound (None: none) and whether
# the bound itself is allowed (a mistyped sign or a percentage for a fraction would otherwise
# be silently off, or silently something else).
AUGMENT_RANGES = {
    "scale": (1.0, False), "shear": (None, True), "drift_deg": (180.0, True),
    "noise": (None, True), "swap_bodies": (1.0, True), "drop_joints": (1.0, False),
    "drop_frames": (1.0, False), "mirror": (1.0, True), "bone_scale": (1.0, False),
}  # fmt: skip


def check_augment_value(key: str, value) -> None:
    """data.skeleton.augment.`key` within its `AUGMENT_RANGES` entry, else ValueError."""
    hi, closed = AUGMENT_RANGES[key]
    ok = is_number(value) and value >= 0
    if ok and hi is not None:
        ok = value <= hi if closed else value < hi
    if not ok:
        text = ">= 0" if hi is None else f"in [0, {hi:g}{']' if closed else ')'}"
        raise ValueError(f"data.skeleton.augment.{key} must be {text}, got {value!r}")


def check_augment(aug) -> None:
    """Refuse (ValueError naming the key) data.skeleton.augment values out of their range:
    `AUGMENT_RANGES`, rotate_deg three angles in [0, 180], temporal_crop two fractions
    0 < lo <= hi <= 1."""
    for key in AUGMENT_RANGES:
        check_augment_value(key, aug.get(key, 0.0))
    rotate = _as_list(aug.get("rotate_deg", [0, 0, 0]))
    if len(rotate) != 3 or not all(is_number(a) and 0 <= a <= 180 for a in rotate):
        raise ValueError(
            f"data.skeleton.augment.rotate_deg must be three angles in [0, 180] (about x, y, "
            f"z), got {rotate}"
        )
    crop = _as_list(aug.get("temporal_crop", [1.0, 1.0]))
    if len(crop) != 2 or not all(is_number(c) for c in crop) or not (0 < crop[0] <= crop[1] <= 1):
        raise ValueError(
            f"data.skeleton.augment.temporal_crop must be [lo, hi] with 0 < lo <= hi <= 1 "
            f"(fractions of the clip), got {crop}"
        )


def _as_list(value) -> list:
    """A config list as a list; anything else (a number, a string) as one item."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


class RandomAugment:
    """Random rotation (about y most, x and z a little), anisotropic scale and shear, plus
    optional view drift and joint jitter.

    `drift_deg`: an extra rotation about y that moves linearly from one random angle in
    [-d, d] to another over the clip (a camera circling the person). `noise`: Gaussian
    jitter of each joint, std in the normalised units (spine lengths after ScaleNormalize).
    `swap_bodies`: the chance that a clip of two people present has its bodies' order
    reversed (the partner becomes body 0); clips of one person draw nothing for it.
    `drop_joints` / `drop_frames`: the chance that each joint (in every frame and body) or
    each frame (every body in it) is zeroed, as if untracked; one frame with somebody in it
    is always kept.
    Needs "keypoint" (..., T, V, 3) and "rng". Absent body-frames stay zero.
    """

    def __init__(
        self,
        rotate_deg: Sequence[float] = (15.0, 30.0, 15.0),
        scale: float = 0.1,
        shear: float = 0.0,
        drift_deg: float = 0.0,
        noise: float = 0.0,
        swap_bodies: float = 0.0,
        drop_joints: float = 0.0,
        drop_frames: float = 0.0,
    ):
        self.rotate = np.deg2rad(np.asarray(rotate_deg, np.float64))
        self.scale = scale
        self.shear = shear
        self.drift = np.deg2rad(drift_deg)
        self.noise = noise
        self.swap = swap_bodies
        self.drop_joints, self.drop_frames = drop_joints, drop_frames

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        ax, ay, az = rng.uniform(-self.rotate, self.rotate)
        rx, ry, rz = _rot_x(ax), _rot_y(ay), _rot_z(az)
        s = np.diag(rng.uniform(1 - self.scale, 1 + self.scale, 3))
        sh = np.eye(3) + (rng.uniform(-self.shear, self.shear, (3, 3)) * (1 - np.eye(3)))
        return (rz @ ry @ rx @ s @ sh).astype(np.float32)

    def drift_matrices(self, rng: np.random.Generator, t: int) -> np.ndarray:
        """(T, 3, 3) rotations about y moving linearly between two random angles."""
        start, end = rng.uniform(-self.drift, self.drift, 2)
        return np.stack([_rot_y(a) for a in np.linspace(start, end, t)]).astype(np.float32)

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        if kp.shape[-1] != 3:
            return results
        rng = results["rng"]
        valid = np.abs(kp).sum(-1, keepdims=True) > 0
        out = kp @ self.matrix(rng).T
        if self.drift > 0:
            out = np.einsum("...tvc,tdc->...tvd", out, self.drift_matrices(rng, kp.shape[-3]))
        if self.noise > 0:
            out = out + rng.normal(0.0, self.noise, out.shape)
        kept = valid
        if self.drop_joints > 0:
            kept = kept & (rng.random(kp.shape[-2]) >= self.drop_joints)[:, None]
        if self.drop_frames > 0:
            keep = rng.random(kp.shape[-3]) >= self.drop_frames
            present = np.flatnonzero(valid.reshape(-1, *valid.shape[-3:]).any((0, 2, 3)))
            if len(present):  # one frame with somebody in it always stays
                keep[rng.choice(present)] = True
            kept = kept & keep[:, None, None]
        out = np.where(kept, out, 0.0).astype(np.float32)
        if self.swap > 0 and kp.ndim == 4 and len(kp) == 2 and valid.any((1, 2, 3)).all():
            if rng.random() < self.swap:
                out = out[::-1].copy()
        results["keypoint"] = out
        return results


class RandomMirror:
    """With chance `p`, the clip's mirror image: x negated and every left joint swapped with
    its right twin (`Layout.mirror_index`), so the body is a whole body seen from the other
    side, handedness included. Runs after view alignment, where x is the body's left-right
    line. Needs "keypoint" (..., V, 3) and "rng"."""

    def __init__(self, layout, p: float = 0.5):
        index = layout.mirror_index()
        if index is None:
            raise ValueError(
                f"augment.mirror needs a layout with left and right joints; {layout.name} has none"
            )
        self.index, self.p = index, p

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        if kp.shape[-1] == 3 and results["rng"].random() < self.p:
            out = kp[..., self.index, :].copy()
            out[..., 0] *= -1
            results["keypoint"] = out
        return results


MAX_TEST_VIEWS = 360  # each view multiplies the test work


def check_test_views(angles_deg) -> None:
    """data.skeleton.test_views must be 1 to MAX_TEST_VIEWS finite numbers (degrees); else
    ValueError. The one rule for configs, checkpoints and ONNX metadata."""
    numbers = isinstance(angles_deg, Sequence) and not isinstance(angles_deg, str)
    numbers = numbers and all(is_number(a) for a in angles_deg)
    if not numbers or not 1 <= len(angles_deg) <= MAX_TEST_VIEWS:
        long = isinstance(angles_deg, Sequence) and len(angles_deg) > 8
        shown = f"({len(angles_deg)} items)" if long else repr(angles_deg)
        raise ValueError(
            f"data.skeleton.test_views={shown} is not 1 to {MAX_TEST_VIEWS} angles in degrees "
            "(or null)"
        )


class TestViews:
    """Test-time views: every test clip seen again turned about the vertical axis (y, the
    spine after view alignment) by each angle of `angles_deg`, in that order, the turned
    copies stacked as further clips so that their scores are averaged with the others' (list
    0 first to keep the clips as they are in front: predict shows the first clip's
    attention). Needs "keypoint" (K, M, T, V, 3) from `Resample`; its "frame_inds" (K, T)
    are repeated to match. Absent body-frames stay zero."""

    def __init__(self, angles_deg: Sequence[float]):
        check_test_views(angles_deg)
        self.mats = [_rot_y(np.deg2rad(float(a))).astype(np.float32) for a in angles_deg]

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        if kp.shape[-1] != 3:
            return results
        valid = np.abs(kp).sum(-1, keepdims=True) > 0
        views = [np.where(valid, kp @ m.T, 0.0).astype(np.float32) for m in self.mats]
        results["keypoint"] = np.concatenate(views)
        results["frame_inds"] = np.concatenate([results["frame_inds"]] * len(self.mats))
        return results


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
