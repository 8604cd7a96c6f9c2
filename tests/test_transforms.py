"""Skeleton transforms: values after centring, alignment, scaling, resampling, features."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from skelact.data.prep.bones import MedianBones, RandomBones
from skelact.data.prep.channels import MotionFeatures
from skelact.data.prep.sampling import clip_indices
from skelact.data.prep.transforms import (
    AlignView,
    Center,
    PadBodies,
    Resample,
    ScaleNormalize,
    TrimEmpty,
    build_skeleton_pipeline,
    rotation_to_axes,
)
from skelact.layouts import KINECT20, NTU25, get_layout


def standing_ntu(frames: int = 10, yaw_deg: float = 40.0, offset=(0.5, 0.2, 3.0)) -> np.ndarray:
    """(1, T, 25, 3) a T-posed body rotated about y by `yaw_deg` and moved to `offset`."""
    kp = np.zeros((25, 3), np.float32)
    kp[0] = [0, 0, 0]  # spine base
    kp[20] = [0, 0.5, 0]  # spine shoulder
    kp[1] = [0, 0.25, 0]
    kp[4], kp[8] = [-0.2, 0.5, 0], [0.2, 0.5, 0]  # shoulders
    kp[12], kp[16] = [-0.1, 0, 0], [0.1, 0, 0]  # hips
    kp[3] = [0, 0.7, 0]
    a = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    body = kp @ rot.T + np.asarray(offset)
    return np.repeat(body[None, None], frames, 1).astype(np.float32)


def test_center_puts_main_body_centre_at_origin_and_keeps_absent_zero():
    kp = np.concatenate([standing_ntu(), np.zeros((1, 10, 25, 3), np.float32)])
    out = Center(NTU25)({"keypoint": kp})["keypoint"]
    np.testing.assert_allclose(out[0, :, 1].mean(0), 0, atol=1e-6)  # spine mid at origin
    assert np.all(out[1] == 0)


def test_align_view_undoes_a_yaw_rotation():
    kp = Center(NTU25)({"keypoint": standing_ntu(yaw_deg=40)})["keypoint"]
    out = AlignView(NTU25)({"keypoint": kp})["keypoint"]
    shoulder = out[0, 0, 8] - out[0, 0, 4]
    spine = out[0, 0, 20] - out[0, 0, 0]
    np.testing.assert_allclose(shoulder / np.linalg.norm(shoulder), [1, 0, 0], atol=1e-5)
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 1, 0], atol=1e-5)


def test_rotation_to_axes_is_orthonormal():
    rng = np.random.default_rng(0)
    r = rotation_to_axes(rng.normal(size=(5, 3)), rng.normal(size=(5, 3)))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)


def test_scale_normalize_gives_unit_spine():
    kp = standing_ntu() * 1.7
    out = ScaleNormalize(NTU25)({"keypoint": kp})["keypoint"]
    assert np.linalg.norm(out[0, 0, 20] - out[0, 0, 0]) == pytest.approx(1.0, rel=1e-5)


def test_scale_normalize_generic_uses_rms_spread():
    kp = np.random.default_rng(1).normal(size=(1, 8, 7, 3)).astype(np.float32) * 5
    out = ScaleNormalize(get_layout("generic", 7))({"keypoint": kp})["keypoint"]
    spread = np.sqrt(((out[0] - out[0].mean(1, keepdims=True)) ** 2).sum(-1).mean())
    assert spread == pytest.approx(1.0, rel=1e-4)


def test_median_bones_keep_each_bone_at_its_median_length_and_direction():
    """data.skeleton.bone_lengths=median: in every frame each bone has the length that is its
    median over the clip, and points where it pointed; the root joint stays; an absent body
    (and the absent frames of a present one) stays zero."""
    parents = np.maximum(np.array(KINECT20.parents), 0)
    rng = np.random.default_rng(0)
    kp = rng.normal(size=(2, 9, 20, 3)).astype(np.float32)
    kp[0, 6:] = 0  # body 0 leaves after frame 5
    kp[1] = 0  # no second body
    out = MedianBones(KINECT20)({"keypoint": kp})["keypoint"]
    before, after = kp[0, :6] - kp[0, :6][:, parents], out[0, :6] - out[0, :6][:, parents]
    lengths = np.linalg.norm(before, axis=-1)  # (6, V)
    has_parent = np.array(KINECT20.parents) >= 0
    want = np.broadcast_to(np.median(lengths, 0), lengths.shape)
    np.testing.assert_allclose(np.linalg.norm(after, axis=-1)[:, has_parent],
                               want[:, has_parent], rtol=1e-5)  # fmt: skip
    b, a = before[:, has_parent], after[:, has_parent]
    cos = (b * a).sum(-1) / (np.linalg.norm(b, axis=-1) * np.linalg.norm(a, axis=-1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)
    root = np.flatnonzero(~has_parent)
    np.testing.assert_array_equal(out[0, :6, root], kp[0, :6, root])
    assert not out[0, 6:].any() and not out[1].any()


def test_random_bones_scale_each_bone_once_per_clip_twins_alike():
    rng = np.random.default_rng(3)
    kp = rng.normal(size=(2, 9, 25, 3)).astype(np.float32)
    kp[1, 4:] = 0  # body 1 leaves after frame 3
    out = RandomBones(NTU25, 0.2)({"keypoint": kp, "rng": np.random.default_rng(0)})["keypoint"]
    bones = NTU25.bones()
    ratio = {}
    for m, t in ((0, 9), (1, 4)):
        before = np.stack([kp[m, :t, v] - kp[m, :t, p] for v, p in bones], 1)  # (t, B, 3)
        after = np.stack([out[m, :t, v] - out[m, :t, p] for v, p in bones], 1)
        r = np.linalg.norm(after, axis=-1) / np.linalg.norm(before, axis=-1)
        np.testing.assert_allclose(r, np.broadcast_to(r[0], r.shape), rtol=1e-4)  # per clip
        cos = (
            (before * after).sum(-1)
            / np.linalg.norm(before, axis=-1)
            / np.linalg.norm(after, axis=-1)
        )
        np.testing.assert_allclose(cos, 1.0, atol=1e-4)  # directions kept
        ratio[m] = dict(zip([v for v, _ in bones], r[0], strict=True))
    twins = NTU25.mirror_index()
    for m in ratio:
        values = np.array(list(ratio[m].values()))
        assert 0.8 <= values.min() and values.max() <= 1.2 and values.std() > 0.02
        assert all(abs(r - ratio[m][twins[v]]) < 1e-4 for v, r in ratio[m].items())
    assert abs(ratio[0][1] - ratio[1][1]) > 1e-3  # each body draws its own
    assert not out[1, 4:].any()
    np.testing.assert_array_equal(out[:, :4, 0], kp[:, :4, 0])  # the root stays
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="bone_scale must be in"):
            RandomBones(NTU25, bad)


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("bone_scale", -0.1, r"bone_scale must be in \[0, 1\), got -0.1"),
        ("mirror", 50, r"mirror must be in \[0, 1\], got 50"),
        ("scale", 1.0, r"scale must be in \[0, 1\)"),
        ("noise", float("nan"), "noise must be >= 0, got nan"),
        ("drop_frames", "0.1", "drop_frames must be in"),
        ("rotate_deg", [15, 30], "rotate_deg must be three angles"),
        ("rotate_deg", 30, "rotate_deg must be three angles"),
        ("temporal_crop", 0.8, r"temporal_crop must be \[lo, hi\]"),
        ("temporal_crop", [0.9, 0.5], r"temporal_crop must be \[lo, hi\]"),
        ("temporal_crop", [0.0, 1.0], r"temporal_crop must be \[lo, hi\]"),
    ],
)
def test_augment_values_out_of_range_are_refused_by_name(key, value, error):
    cfg = OmegaConf.load(Path(__file__).parents[1] / "configs" / "data" / "_base.yaml").skeleton
    build_skeleton_pipeline(NTU25, cfg, True, 1)  # the defaults pass
    cfg.augment[key] = value
    with pytest.raises(ValueError, match=error):
        build_skeleton_pipeline(NTU25, cfg, True, 1)
    build_skeleton_pipeline(NTU25, cfg, False, 1)  # test time takes no augmentation


def test_pad_and_trim():
    kp = np.zeros((3, 12, 20, 3), np.float32)
    kp[0, 3:9] = 1.0
    res = TrimEmpty()(PadBodies(2)({"keypoint": kp}))
    assert res["keypoint"].shape == (2, 6, 20, 3) and res["trim_offset"] == 3
    assert PadBodies(4)({"keypoint": kp})["keypoint"].shape[0] == 4


def test_resample_test_clips_cover_the_sequence():
    kp = np.arange(50, dtype=np.float32)[None, :, None, None] * np.ones((1, 50, 2, 3), np.float32)
    res = Resample(10, train=False, num_clips=2)({"keypoint": kp})
    assert res["keypoint"].shape == (2, 1, 10, 2, 3)
    # 10 segments of 5 frames; clip k at k/2 + 1/4 of each segment: frames 1, 6, ... / 3, 8, ...
    want = np.stack([np.arange(1, 50, 5), np.arange(3, 50, 5)])
    np.testing.assert_array_equal(res["frame_inds"], want)
    np.testing.assert_array_equal(res["keypoint"][:, 0, :, 0, 0], want)  # value = frame index


def test_resample_train_is_seeded_and_in_range():
    kp = np.random.default_rng(0).normal(size=(1, 30, 2, 3)).astype(np.float32)
    sample = lambda seed: Resample(8, train=True, crop=(0.5, 1.0))(  # noqa: E731
        {"keypoint": kp, "rng": np.random.default_rng(seed)}
    )["frame_inds"]
    a, b = sample(3), sample(3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample(4))  # the seed drives the choice
    assert a.shape == (1, 8) and a.min() >= 0 and a.max() < 30 and np.all(np.diff(a) >= 0)
    # crop=(0.5, 0.5): a 15-frame window of the 30, one frame in each 15/8-frame segment, so
    # first and last index lie 12 to 14 frames apart wherever the window starts
    half = [
        Resample(8, train=True, crop=(0.5, 0.5))(
            {"keypoint": kp, "rng": np.random.default_rng(seed)}
        )["frame_inds"][0]
        for seed in range(20)
    ]
    assert all(12 <= np.ptp(i) <= 14 for i in half)
    assert len({int(i[0]) for i in half}) > 1  # the window moves


def test_resample_interpolate_blends_neighbouring_frames():
    # value = frame index + 1: a blend at time p (frame i sits at i + 0.5) is p + 0.5, clipped
    # to the clip; 5 frames upsampled to 20 move by 0.25 a step instead of repeating
    kp = np.arange(1, 6, dtype=np.float32)[None, :, None, None] * np.ones((2, 5, 2, 3), np.float32)
    kp[1, 3:] = 0.0  # body 1 leaves after frame 2
    plain = Resample(20, train=False, num_clips=2)({"keypoint": kp.copy()})
    res = Resample(20, train=False, num_clips=2, interpolate=True)({"keypoint": kp.copy()})
    np.testing.assert_array_equal(res["frame_inds"], plain["frame_inds"])  # other streams agree
    pos = (np.arange(20)[None] + np.array([[0.25], [0.75]])) * 5 / 20
    np.testing.assert_allclose(
        res["keypoint"][:, 0, :, 0, 0], np.clip(pos - 0.5, 0, 4) + 1, atol=1e-6
    )
    assert np.all(np.diff(res["keypoint"][0, 0, 1:-1, 0, 0]) > 0)  # repeats only at the ends
    body1 = res["keypoint"][:, 1, :, 0, 0]
    # never blended with its absence: between frames 2 and 3 it takes the nearer frame whole
    assert set(np.round(body1[body1 > 3], 6)) <= set() and np.all(body1[:, pos[0] > 3.5] == 0)
    assert set(np.round(body1[:, (pos[0] > 2.5) & (pos[0] < 3.5)].ravel(), 6)) <= {0.0, 3.0}
    # training: the same random frames as without interpolation, values within the crop
    args = dict(train=True, crop=(0.6, 0.6))
    a = Resample(12, **args)({"keypoint": kp.copy(), "rng": np.random.default_rng(5)})
    b = Resample(12, interpolate=True, **args)(
        {"keypoint": kp.copy(), "rng": np.random.default_rng(5)}
    )
    np.testing.assert_array_equal(a["frame_inds"], b["frame_inds"])
    # and the frames every other stream samples with the same generator (sampling.clip_indices)
    rule = clip_indices(5, 12, True, np.random.default_rng(5), 1, (0.6, 0.6))
    np.testing.assert_array_equal(a["frame_inds"], rule)
    lo, hi = a["frame_inds"].min() + 1, a["frame_inds"].max() + 1  # as values
    values = b["keypoint"][0, 0, :, 0, 0]
    assert lo <= values.min() and values.max() <= hi and len(np.unique(values)) > hi - lo + 1


def test_motion_features_channels_and_values():
    kp = np.random.default_rng(0).normal(size=(1, 1, 5, 20, 3)).astype(np.float32)
    out = MotionFeatures(KINECT20, ["joint", "velocity", "bone"])({"keypoint": kp})["keypoint"]
    assert out.shape == (1, 1, 5, 20, 9)
    np.testing.assert_allclose(out[..., 3:6][0, 0, 1], kp[0, 0, 2] - kp[0, 0, 1], rtol=1e-6)
    np.testing.assert_allclose(out[..., 6:9][0, 0, 0, 5], kp[0, 0, 0, 5] - kp[0, 0, 0, 4])


def test_root_features_are_the_body_centre_at_every_joint():
    kp = np.random.default_rng(1).normal(size=(1, 2, 4, 25, 3)).astype(np.float32)
    kp[0, 1, 2] = 0  # body 1 absent in frame 2
    out = MotionFeatures(NTU25, ["velocity", "root"])({"keypoint": kp})["keypoint"]
    assert out.shape == (1, 2, 4, 25, 6)
    # NTU25's centre is the spine-mid joint (1): its position, copied to all 25 joints
    np.testing.assert_allclose(out[0, 0, 3, :, 3:], np.repeat(kp[0, 0, 3, 1][None], 25, 0))
    np.testing.assert_allclose(out[0, 1, 1, 7, 3:], kp[0, 1, 1, 1])
    assert not out[0, 1, 2, :, 3:].any()


def test_distance_features_are_view_invariant():
    kp = np.random.default_rng(2).normal(size=(1, 1, 4, 20, 3)).astype(np.float32)
    feats = MotionFeatures(KINECT20, ["distance"])
    out = feats({"keypoint": kp})["keypoint"]
    assert (
        out.shape == (1, 1, 4, 20, 20)
        and MotionFeatures.channels(["joint", "distance"], 3, 20) == 23
    )
    assert out[0, 0, 1, 3, 7] == pytest.approx(
        np.linalg.norm(kp[0, 0, 1, 3] - kp[0, 0, 1, 7]), rel=1e-5
    )
    rot = rotation_to_axes(np.array([[1.0, 0.2, 0.3]]), np.array([[0.1, 1.0, -0.2]]))
    turned = feats({"keypoint": kp @ rot.T})["keypoint"]
    np.testing.assert_allclose(turned, out, atol=1e-5)


def test_height_features_keep_up_and_down_under_any_turn_about_the_vertical():
    kp = np.random.default_rng(3).normal(size=(1, 1, 4, 20, 3)).astype(np.float32)
    feats = MotionFeatures(KINECT20, ["height", "joint"])
    out = feats({"keypoint": kp})["keypoint"]
    assert out.shape == (1, 1, 4, 20, 23)
    assert out[0, 0, 2, 5, 11] == pytest.approx(kp[0, 0, 2, 5, 1] - kp[0, 0, 2, 11, 1], rel=1e-5)
    a = np.deg2rad(70)  # a turn about y changes x and z, never the heights
    yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    turned = feats({"keypoint": kp @ yaw.T.astype(np.float32)})["keypoint"]
    np.testing.assert_allclose(turned[..., :20], out[..., :20], atol=1e-5)
    assert np.abs(turned[..., 20:] - out[..., 20:]).max() > 0.1
    pitch = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    tilted = feats({"keypoint": kp @ pitch.T.astype(np.float32)})["keypoint"]
    assert np.abs(tilted[..., :20] - out[..., :20]).max() > 0.1  # a tilt does change them


def test_align_view_on_hips_and_on_mediapipe33():
    kp = Center(NTU25)({"keypoint": standing_ntu(yaw_deg=-30)})["keypoint"]
    out = AlignView(NTU25, "hips")({"keypoint": kp})["keypoint"]
    hips = out[0, 0, 16] - out[0, 0, 12]
    np.testing.assert_allclose(hips / np.linalg.norm(hips), [1, 0, 0], atol=1e-5)
    mp = get_layout("mediapipe33")
    assert mp.named  # spine derived from mid-hips -> mid-shoulders
    body = np.zeros((1, 3, 33, 3), np.float32)
    body[0, :, 11], body[0, :, 12] = [0, 1, 0.3], [0, 1, -0.3]  # shoulders along z
    body[0, :, 23], body[0, :, 24] = [0, 0, 0.1], [0, 0, -0.1]
    out = AlignView(mp)({"keypoint": body})["keypoint"]
    np.testing.assert_allclose(out[0, 0, 12] - out[0, 0, 11], [0.6, 0, 0], atol=1e-5)


def test_skeleton_and_frame_streams_sample_the_same_frames():
    """One rule for every stream: fused streams look at the same moments (test mode)."""
    from skelact.data.prep.sampling import sample_indices

    for total in range(1, 300):
        for length in (8, 16, 32):
            skel = Resample(length, train=False, num_clips=1).indices(total, None)[0]
            assert np.array_equal(skel, sample_indices(total, length)), (total, length)


def test_mirror_swaps_left_and_right_and_negates_x():
    from skelact.data.prep.augment import RandomMirror

    kp = np.random.default_rng(4).normal(size=(2, 5, 25, 3)).astype(np.float32)
    always = RandomMirror(NTU25, p=1.0)
    out = always({"keypoint": kp, "rng": np.random.default_rng(0)})["keypoint"]
    lh, rh = NTU25.index("left_hand"), NTU25.index("right_hand")
    np.testing.assert_allclose(out[1, 3, rh], kp[1, 3, lh] * [-1, 1, 1])
    np.testing.assert_allclose(out[0, 2, 3], kp[0, 2, 3] * [-1, 1, 1])  # the head stays
    back = always({"keypoint": out, "rng": np.random.default_rng(0)})["keypoint"]
    np.testing.assert_allclose(back, kp)
    half = RandomMirror(NTU25, p=0.5)
    rng = np.random.default_rng(1)
    flips = [not np.array_equal(half({"keypoint": kp, "rng": rng})["keypoint"], kp)
             for _ in range(200)]  # fmt: skip
    assert 70 < sum(flips) < 130
    with pytest.raises(ValueError, match="left and right joints; generic"):
        RandomMirror(get_layout("generic", 10))


def test_pairwise_distance_is_numpys_norm_to_the_bit():
    from skelact.data.prep.channels import pairwise_distance

    rng = np.random.default_rng(5)
    for scale in (0.01, 1.0, 300.0):
        a = (rng.normal(size=(2, 8, 25, 3)) * scale).astype(np.float32)
        for b in (a, a[::-1]):
            want = np.linalg.norm(a[..., :, None, :] - b[..., None, :, :], axis=-1)
            got = pairwise_distance(a, b)
            assert got.dtype == np.float32 and np.array_equal(got, want)
    flat = rng.normal(size=(4, 17, 2))  # 2-D keypoints, float64
    np.testing.assert_array_equal(
        pairwise_distance(flat, flat), np.linalg.norm(flat[:, :, None] - flat[:, None], axis=-1)
    )


def test_test_views_turn_each_clip_about_the_vertical_and_stack_them_as_clips():
    from omegaconf import OmegaConf

    from skelact.data.prep.augment import TestViews
    from skelact.data.prep.transforms import build_skeleton_pipeline

    kp = np.random.default_rng(5).normal(size=(2, 1, 6, 25, 3)).astype(np.float32)  # K=2 clips
    kp[:, 0, 4] = 0  # an untracked frame stays zero in every view
    inds = np.array([[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11]])
    res = TestViews([0, 90, -30])({"keypoint": kp, "frame_inds": inds})
    out = res["keypoint"]
    assert out.shape == (6, 1, 6, 25, 3)
    np.testing.assert_array_equal(out[:2], kp)  # angle 0: the clips as they were, first
    # +90 degrees about y: x <- z, z <- -x, y kept
    np.testing.assert_allclose(out[2:4, ..., 0], kp[..., 2], atol=1e-6)
    np.testing.assert_allclose(out[2:4, ..., 2], -kp[..., 0], atol=1e-6)
    np.testing.assert_array_equal(out[2:4, ..., 1], kp[..., 1])
    a = np.deg2rad(-30)
    np.testing.assert_allclose(
        out[4:, ..., 0], np.cos(a) * kp[..., 0] + np.sin(a) * kp[..., 2], atol=1e-6
    )
    assert np.all(out[:, 0, 4] == 0)
    np.testing.assert_array_equal(res["frame_inds"], np.concatenate([inds] * 3))
    # lengths and distances are unchanged by a turn
    norms = np.linalg.norm(out[4:], axis=-1)
    np.testing.assert_allclose(norms, np.linalg.norm(kp, axis=-1), rtol=1e-5)

    # in the pipeline: test clips x views at test time, nothing in training
    cfg = OmegaConf.create(
        {"center": True, "align_view": True, "scale_normalize": True, "clip_len": 8,
         "test_clips": 3, "test_views": [0, -15, 15], "augment": {"enabled": False}}
    )  # fmt: skip
    body = standing_ntu(frames=20)
    test = build_skeleton_pipeline(NTU25, cfg, False, 1, ["joint"])({"keypoint": body})
    assert test["keypoint"].shape == (9, 1, 8, 25, 3) and test["frame_inds"].shape == (9, 8)
    train = build_skeleton_pipeline(NTU25, cfg, True, 1, ["joint"])(
        {"keypoint": body, "rng": np.random.default_rng(0)}
    )
    assert train["keypoint"].shape == (1, 1, 8, 25, 3)
    with pytest.raises(ValueError, match="test_views"):
        TestViews([])
    with pytest.raises(ValueError, match=r"test_views=\(361 items\) is not 1 to 360 angles"):
        TestViews([0.0] * 361)
    with pytest.raises(ValueError, match=r"test_views=\[0, nan\] is not"):
        TestViews([0, float("nan")])
