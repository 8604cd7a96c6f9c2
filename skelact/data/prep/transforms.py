"""Skeleton preprocessing as plain dict -> dict callables.

Every transform reads "keypoint" (..., M, T, V, C) float32 and writes it back; leading dims
(test-time clips) pass through. Randomness comes only from results["rng"], a numpy Generator
the dataset seeds per (seed, epoch, sample): results are identical across workers, processes
and resumed runs. The augmentation lives in `skelact.data.prep.augment`, the transforms that
rebuild a body from its bones in `skelact.data.prep.bones`, the input channels in
`skelact.data.prep.channels`; `build_skeleton_pipeline` puts them all in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from skelact.contract import most_active
from skelact.data.prep.augment import RandomAugment, RandomMirror, TestViews, check_augment
from skelact.data.prep.bones import MedianBones, RandomBones
from skelact.data.prep.channels import MotionFeatures
from skelact.data.prep.sampling import (
    clip_indices,
    clip_positions,
    frames_at,
    interpolate_frames,
    present,
)
from skelact.layouts import Layout, spine_points

Results = dict


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Results], Results]]):
        self.transforms = list(transforms)

    def __call__(self, results: Results) -> Results:
        for t in self.transforms:
            results = t(results)
        return results

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


class PadBodies:
    """Keep `num_bodies` bodies (of more, the most active: `contract.most_active`), zero-pad
    to exactly that many.

    Needs "keypoint" (M, T, V, C); rewrites it as (num_bodies, T, V, C).
    """

    def __init__(self, num_bodies: int):
        self.num_bodies = num_bodies

    def __call__(self, results: Results) -> Results:
        kp = most_active(results["keypoint"], self.num_bodies)
        if kp.shape[0] < self.num_bodies:
            pad = np.zeros((self.num_bodies - kp.shape[0], *kp.shape[1:]), kp.dtype)
            kp = np.concatenate([kp, pad], 0)
        results["keypoint"] = kp
        return results


class TrimEmpty:
    """Drop leading and trailing frames where no body is present.

    Needs "keypoint" (M, T, V, C); rewrites it, sets "trim_offset" (the first kept frame's
    index in the input).
    """

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        frames = np.flatnonzero(present(kp).any(0))
        if len(frames):
            kp = kp[:, frames[0] : frames[-1] + 1]
        results["trim_offset"] = int(frames[0]) if len(frames) else 0
        results["keypoint"] = kp
        return results


class FillUntracked:
    """Fill untracked joints from the same joint in neighbouring frames.

    Sensors store a joint they lost as exact zeros while the rest of the body is there; after
    centring it would sit metres away. Such joints are interpolated linearly over the body's
    frames where the joint is tracked (held constant beyond the first and last); a joint never
    tracked in the clip takes the mean of the body's tracked joints in that frame. Absent
    bodies stay zero. Needs "keypoint" (M, T, V, C).
    """

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        here = present(kp)  # (M, T)
        missing = (kp == 0).all(-1) & here[..., None]  # (M, T, V)
        if not missing.any():
            return results
        kp = kp.copy()
        t = np.arange(kp.shape[1])
        for m, v in zip(*np.nonzero(missing.any(1)), strict=True):
            bad = missing[m, :, v]
            good = here[m] & ~bad
            if good.any():
                for c in range(kp.shape[-1]):
                    kp[m, bad, v, c] = np.interp(t[bad], t[good], kp[m, good, v, c])
            else:
                ok = ~missing[m, bad]  # (F, V) tracked joints of those frames
                total = (kp[m, bad] * ok[..., None]).sum(1)
                kp[m, bad, v] = total / np.maximum(ok.sum(1), 1)[:, None]
        results["keypoint"] = kp
        return results


class Center:
    """Translate so the main body's centre (mean over its valid frames) is the origin.

    One offset for the whole clip keeps the motion of the body through space (walking,
    sitting down). Needs "keypoint" (M, T, V, C); absent body-frames stay zero.
    """

    def __init__(self, layout: Layout):
        self.center = list(layout.center)

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        valid = present(kp)
        if valid[0].any():
            origin = kp[0, valid[0]][:, self.center].mean((0, 1))  # (C,)
            kp = np.where(valid[..., None, None], kp - origin, 0.0).astype(np.float32)
        results["keypoint"] = kp
        return results


class AlignView:
    """Rotate so the main body's left->right line lies on +x and its spine on +y.

    The left->right line is the shoulders', the hips', or their sum ("both": steadier when one
    pair is badly tracked, as in side views). Axes are averaged over the main body's valid
    frames. Needs "keypoint" (M, T, V, 3) in a layout with named joints; others pass through.
    """

    def __init__(self, layout: Layout, axis: str = "shoulders"):
        if axis not in ("shoulders", "hips", "both"):
            raise ValueError(f"align axis must be shoulders, hips or both, not {axis!r}")
        self.layout = layout
        self.pairs = {
            "shoulders": [layout.left_right],
            "hips": [layout.hips],
            "both": [layout.left_right, layout.hips],
        }[axis]

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        valid = present(kp)
        if not self.layout.named or kp.shape[-1] != 3 or not valid[0].any():
            return results
        body = kp[0, valid[0]]  # (T', V, 3)
        bottom, top = spine_points(self.layout, body)
        x_dir = sum(body[:, right] - body[:, left] for left, right in self.pairs)
        rot = rotation_to_axes(x_dir, top - bottom)
        results["keypoint"] = np.where(valid[..., None, None], kp @ rot.T, 0.0).astype(np.float32)
        return results


def rotation_to_axes(x_dir: np.ndarray, y_dir: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking the mean of `y_dir` (K, 3) to +y and `x_dir` (K, 3) into x-y."""
    y = y_dir.mean(0)
    if np.linalg.norm(y) < 1e-6:  # no spine direction (a degenerate body): leave the view
        return np.eye(3, dtype=np.float32)
    y = y / (np.linalg.norm(y) + 1e-8)
    x = x_dir.mean(0)
    x = x - (x @ y) * y  # Gram-Schmidt: the shoulders are not exactly square to the spine
    if np.linalg.norm(x) < 1e-6:
        return np.eye(3, dtype=np.float32)
    x = x / np.linalg.norm(x)
    z = np.cross(x, y)
    return np.stack([x, y, z]).astype(np.float32)


class ScaleNormalize:
    """Divide coordinates by a body size so that people of any height look alike.

    Named layouts: mean spine length (bottom to top) of the main body. Generic: RMS distance
    of the main body's joints from their centre. Needs "keypoint" (M, T, V, C).
    """

    def __init__(self, layout: Layout):
        self.layout = layout

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        valid = present(kp)
        if not valid[0].any():
            return results
        body = kp[0, valid[0]]  # (T', V, C)
        if self.layout.named or self.layout.hips is not None:
            bottom, top = spine_points(self.layout, body)
            size = np.linalg.norm(top - bottom, axis=-1).mean()
        else:
            size = np.sqrt(((body - body.mean(1, keepdims=True)) ** 2).sum(-1).mean())
        if size > 1e-6:
            results["keypoint"] = (kp / size).astype(np.float32)
        return results


class Resample:
    """Sample `length` frames by segments; stack `num_clips` clips for test-time averaging.

    Training: a random temporal crop (a fraction in `crop` of the clip), then a random frame
    in each of `length` equal segments. Test: segment centres, clip k shifted by k/num_clips
    of a segment (`skelact.data.prep.sampling`). `interpolate`: blend the two frames nearest
    each sampled moment instead of taking the frame it falls in (a clip shorter than `length`
    then moves smoothly instead of repeating frames). Needs "keypoint" (M, T, V, C); writes
    (K, M, length, V, C) and "frame_inds", the frames other streams sample (the same either way).
    """

    def __init__(
        self,
        length: int,
        train: bool,
        num_clips: int = 1,
        crop: Sequence[float] = (1.0, 1.0),
        interpolate: bool = False,
    ):
        self.length, self.train, self.num_clips = length, train, num_clips
        self.crop, self.interpolate = crop, interpolate

    def indices(self, total: int, rng: np.random.Generator | None) -> np.ndarray:
        """(K, length): `skelact.data.prep.sampling.clip_indices`, the rule of every stream."""
        return clip_indices(total, self.length, self.train, rng, self.num_clips, self.crop)

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        args = (kp.shape[1], self.length, self.train, results.get("rng"), self.num_clips)
        start, pos, last = clip_positions(*args, self.crop)
        inds = frames_at(start, pos, last)  # = self.indices(...), from the same draws
        if self.interpolate:
            results["keypoint"] = interpolate_frames(kp, start, pos, last)
        else:
            results["keypoint"] = np.stack([kp[:, i] for i in inds])  # (K, M, length, V, C)
        results["frame_inds"] = inds
        return results


def build_skeleton_pipeline(
    layout: Layout, cfg, train: bool, num_bodies: int, kinds: Sequence[str] | None = None
) -> Compose:
    """The skeleton stream's transforms from the `data.skeleton` config node; `kinds` replaces
    cfg.features as the output channels (the union of several skeleton streams' inputs)."""
    steps: list = [PadBodies(num_bodies), TrimEmpty(), FillUntracked()]
    bone_lengths = cfg.get("bone_lengths", "keep")
    if bone_lengths == "median":
        steps.append(MedianBones(layout))
    elif bone_lengths != "keep":
        raise ValueError(f"data.skeleton.bone_lengths must be keep or median, got {bone_lengths!r}")
    if cfg.center:
        steps.append(Center(layout))
    if cfg.align_view:
        steps.append(AlignView(layout, cfg.get("align_axis", "shoulders")))
    if cfg.scale_normalize:
        steps.append(ScaleNormalize(layout))
    if train and cfg.augment.enabled:
        aug = cfg.augment
        check_augment(aug)
        drops = (aug.get("drop_joints", 0.0), aug.get("drop_frames", 0.0))
        swap = aug.get("swap_bodies", 0.0)
        steps.append(
            RandomAugment(
                aug.rotate_deg, aug.scale, aug.shear, aug.drift_deg, aug.noise, swap, *drops
            )
        )
        if aug.get("mirror", 0.0) > 0:
            steps.append(RandomMirror(layout, aug.mirror))
        if aug.get("bone_scale", 0.0) != 0:
            steps.append(RandomBones(layout, aug.bone_scale))
    crop = tuple(cfg.augment.temporal_crop) if train and cfg.augment.enabled else (1.0, 1.0)
    clips = 1 if train else cfg.test_clips
    steps.append(Resample(cfg.clip_len, train, clips, crop, cfg.get("interpolate", False)))
    views = cfg.get("test_views", None)
    if not train and views is not None:
        steps.append(TestViews(list(views)))
    steps.append(MotionFeatures(layout, cfg.features if kinds is None else kinds))
    return Compose(steps)
