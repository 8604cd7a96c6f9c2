"""The default skeleton recipe: augmentation options and the pipeline the configs build."""

from __future__ import annotations

import numpy as np
import pytest

from skelact.config import compose_config
from skelact.data.prep.augment import RandomAugment
from skelact.data.prep.transforms import build_skeleton_pipeline
from skelact.layouts import KINECT20


def clip(t: int = 40, seed: int = 0) -> np.ndarray:
    kp = np.random.default_rng(seed).normal(size=(1, t, 20, 3)).astype(np.float32)
    kp[0, 5] = 0.0  # an absent frame must stay absent
    return kp


def augment(aug: RandomAugment, kp: np.ndarray, seed: int = 0) -> np.ndarray:
    return aug({"keypoint": kp.copy(), "rng": np.random.default_rng(seed)})["keypoint"]


def test_drift_rotates_about_y_by_an_angle_that_moves_linearly():
    kp = clip()
    out = augment(RandomAugment((0, 0, 0), scale=0.0, drift_deg=40.0), kp)
    # about y only: heights and distances from the y axis are kept
    np.testing.assert_allclose(out[..., 1], kp[..., 1], atol=1e-6)
    np.testing.assert_allclose(
        np.hypot(out[..., 0], out[..., 2]), np.hypot(kp[..., 0], kp[..., 2]), atol=1e-5
    )
    assert np.abs(out[0, 5]).max() == 0.0
    # per-frame angle of joint 3, unwrapped: a straight line in t, within +-40 degrees
    ang = np.arctan2(kp[0, :, 3, 0], kp[0, :, 3, 2]) - np.arctan2(out[0, :, 3, 0], out[0, :, 3, 2])
    ang = np.rad2deg(np.angle(np.exp(1j * ang)))
    t = np.delete(np.arange(40), 5)
    ang = np.delete(ang, 5)
    slope, icpt = np.polyfit(t, ang, 1)
    np.testing.assert_allclose(ang, slope * t + icpt, atol=1e-3)
    assert np.abs(ang).max() <= 40.0 + 1e-3 and abs(slope) > 1e-3


def test_noise_has_the_configured_std_and_keeps_absent_frames():
    kp = clip(t=400)
    out = augment(RandomAugment((0, 0, 0), scale=0.0, noise=0.05), kp)
    diff = np.delete(out - kp, 5, axis=1)
    assert abs(diff.std() - 0.05) < 0.002 and abs(diff.mean()) < 0.002
    assert np.abs(out[0, 5]).max() == 0.0


def test_swap_bodies_reverses_two_people_and_leaves_one_person_alone():
    kp = np.random.default_rng(1).normal(size=(2, 30, 20, 3)).astype(np.float32)
    plain = augment(RandomAugment((15, 30, 15), 0.1), kp, seed=2)
    swapped = augment(RandomAugment((15, 30, 15), 0.1, swap_bodies=1.0), kp, seed=2)
    np.testing.assert_array_equal(swapped, plain[::-1])  # same rotation, bodies reversed
    # p = 0.5: about half the clips, by the seed
    half = RandomAugment((15, 30, 15), 0.1, swap_bodies=0.5)
    flips = [
        np.array_equal(augment(half, kp, seed=s), augment(RandomAugment(), kp, seed=s)[::-1])
        for s in range(200)
    ]
    assert 70 < sum(flips) < 130
    # one person (the second body absent): untouched, and no extra draw from the generator
    one = kp.copy()
    one[1] = 0.0
    rng = np.random.default_rng(3)
    out = RandomAugment(swap_bodies=1.0)({"keypoint": one.copy(), "rng": rng})["keypoint"]
    ref_rng = np.random.default_rng(3)
    ref = RandomAugment()({"keypoint": one.copy(), "rng": ref_rng})["keypoint"]
    np.testing.assert_array_equal(out, ref)
    assert rng.random() == ref_rng.random()


def test_joint_and_frame_dropout_zero_whole_joints_or_frames():
    kp = np.random.default_rng(4).normal(size=(2, 400, 20, 3)).astype(np.float32)
    kp[1, 7] = 0.0  # an absent body-frame stays absent
    plain = augment(RandomAugment(), kp, seed=6)
    joints = augment(RandomAugment(drop_joints=0.3), kp, seed=6)
    gone = ~np.abs(joints).sum(-1).any((0, 1))  # (V,): joints zeroed in every frame and body
    assert 2 <= gone.sum() <= 12  # 0.3 of 20, by chance
    kept = ~gone
    np.testing.assert_array_equal(joints[:, :, kept], plain[:, :, kept])  # the same rotation
    frames = augment(RandomAugment(drop_frames=0.25), kp, seed=6)
    dropped = ~np.abs(frames).sum((0, 2, 3)).astype(bool)  # (T,): no body left in the frame
    assert 70 < dropped.sum() < 130
    np.testing.assert_array_equal(frames[:, ~dropped], plain[:, ~dropped])
    assert not frames[1, 7].any()
    # at 0.999 one frame still survives, and it is one with somebody in it
    sparse = kp[:, :10].copy()
    sparse[:, :9] = 0.0  # only the last frame has anybody
    for seed in range(5):
        tiny = augment(RandomAugment(drop_frames=0.999), sparse, seed=seed)
        assert np.abs(tiny[:, 9]).sum() > 0


def test_defaults_off_leave_the_random_stream_unchanged():
    # drift and noise off draw nothing extra from the rng: old recipes reproduce exactly
    kp = clip()
    aug = RandomAugment((15, 30, 15), 0.1, 0.0)
    rng = np.random.default_rng(0)
    out = aug({"keypoint": kp.copy(), "rng": rng})["keypoint"]
    # the same as the rotation-scale-shear matrix alone, drawn from a fresh rng of that seed
    only_matrix = np.random.default_rng(0)
    expected = np.where(np.abs(kp).sum(-1, keepdims=True) > 0, kp @ aug.matrix(only_matrix).T, 0)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert rng.bit_generator.state == only_matrix.bit_generator.state


@pytest.mark.parametrize("train", [True, False])
def test_default_pipeline_shapes(train):
    cfg = compose_config(["data=nucla_xview", "data.ann_file=none"]).data.skeleton
    pipe = build_skeleton_pipeline(KINECT20, cfg, train, num_bodies=1)
    out = pipe({"keypoint": clip(t=13), "rng": np.random.default_rng(1)})["keypoint"]
    k = 1 if train else cfg.test_clips
    assert out.shape == (k, 1, cfg.clip_len, 20, 3 * len(cfg.features))
    assert np.isfinite(out).all()
