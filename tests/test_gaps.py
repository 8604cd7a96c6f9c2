"""Messy frames: untracked joints (a real N-UCLA case), bodies absent mid-clip, degenerate views,
and the attention mask over frames where nobody is there."""

from __future__ import annotations

import json

import numpy as np
import torch

from skelact.data.prep.channels import MotionFeatures, velocity
from skelact.data.prep.transforms import AlignView, Center, FillUntracked
from skelact.layouts import KINECT20, NTU25
from skelact.models.temporal import TemporalAttention
from tests.conftest import shared_data


def test_untracked_joints_in_real_nucla_are_filled():
    """a04_s01_e01_v01 frame 34 stores several joints as exact zeros while the body is there."""
    path = shared_data("nw_ucla", "all_sqe", "a04_s01_e01_v01.json")
    kp = np.asarray(json.loads(path.read_text())["skeletons"], np.float32)[None]  # (1, T, 20, 3)
    lost = np.flatnonzero((kp[0, 34] == 0).all(-1))
    assert len(lost) >= 3 and (kp[0, 33, lost] != 0).all()
    raw = Center(KINECT20)({"keypoint": kp.copy()})["keypoint"]
    out = FillUntracked()({"keypoint": kp.copy()})["keypoint"]
    # linear in time between frames 33 and 35 for the lost joints, untouched elsewhere
    np.testing.assert_allclose(out[0, 34, lost], (kp[0, 33, lost] + kp[0, 35, lost]) / 2)
    keep = np.setdiff1d(np.arange(20), lost)
    np.testing.assert_array_equal(out[0, 34, keep], kp[0, 34, keep])
    np.testing.assert_array_equal(np.delete(out, 34, 1), np.delete(kp, 34, 1))
    # after centring, the lost joints jumped metres from the frame before; filled they do not
    centred = Center(KINECT20)({"keypoint": out})["keypoint"]
    jump = lambda a: np.linalg.norm(a[0, 34, lost] - a[0, 33, lost], axis=-1).max()  # noqa: E731
    assert jump(raw) > 2.0 and jump(centred) < 0.2


def test_joint_never_tracked_takes_the_frame_mean_and_absent_bodies_stay_zero():
    kp = np.random.default_rng(0).normal(0, 1, (2, 5, 4, 3)).astype(np.float32)
    kp[0, :, 2] = 0  # joint 2 never tracked
    kp[1] = 0  # body 1 absent
    out = FillUntracked()({"keypoint": kp.copy()})["keypoint"]
    np.testing.assert_allclose(out[0, :, 2], kp[0][:, [0, 1, 3]].mean(1), rtol=1e-6)
    assert not out[1].any()


def test_velocity_is_zero_across_a_gap():
    t = np.arange(8, dtype=np.float32)
    kp = np.zeros((1, 8, 2, 3), np.float32)
    kp[0, :, :, 0] = 1.0 + 0.1 * t[:, None]  # moving along x at 0.1 a frame
    kp[0, 3:5] = 0  # the body is absent in frames 3 and 4
    vel = velocity(kp)
    np.testing.assert_allclose(vel[0, [0, 1, 5, 6], :, 0], 0.1, rtol=1e-5)
    assert not vel[0, [2, 3, 4, 7]].any()  # no jump into or out of the gap, none at the end
    feats = MotionFeatures(KINECT20, ["joint", "velocity"])({"keypoint": kp.copy()})["keypoint"]
    np.testing.assert_array_equal(feats[..., 3:], vel)


def test_align_view_with_zero_spine_keeps_the_view():
    kp = np.zeros((1, 4, 25, 3), np.float32)
    kp[0, :, :, 0] = np.linspace(-0.5, 0.5, 25)  # a body flat along x: bottom == top of spine
    out = AlignView(NTU25)({"keypoint": kp.copy()})["keypoint"]
    np.testing.assert_array_equal(out, kp)


def test_attention_gives_absent_frames_no_weight():
    torch.manual_seed(0)
    attn = TemporalAttention(6, 8)
    h = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pooled, w = attn(h, mask)
    assert torch.all(w[0, [2, 4]] == 0) and torch.allclose(w.sum(1), torch.ones(3))
    torch.testing.assert_close(w[1], attn(h[1:2])[1][0])  # nobody anywhere: unmasked weights
    torch.testing.assert_close(w[2], attn(h[2:3])[1][0])
    kept = torch.tensor([0, 1, 3])
    torch.testing.assert_close(pooled[0], attn(h[0:1, kept])[0][0])  # as if the gap were cut


def test_motion_streams_of_a_still_clip_attend_to_every_present_frame():
    """A body standing still has zero motion channels but is present: the default's streams
    share one presence mask, so the motion streams weight every frame the body is in, and the
    frames where nobody is there (a gap) get no weight in any stream."""
    from skelact.config import compose_config
    from skelact.data.datasets import skeleton_channels, skeleton_streams
    from skelact.models.recognizer import build_recognizer

    cfg = compose_config([])  # the default: five skeleton streams
    kinds = skeleton_streams(cfg.data, cfg.modality.streams)
    union, channels = skeleton_channels(kinds, 3, 25)
    still = np.random.default_rng(0).normal(0, 0.3, (25, 3)).astype(np.float32)
    kp = np.zeros((1, 2, 12, 25, 3), np.float32)  # (N, M, T, V, C): body 1 never there
    kp[0, 0] = still
    kp[0, 0, 5:7] = 0  # nobody in frames 5 and 6
    x = torch.from_numpy(MotionFeatures(NTU25, union)({"keypoint": kp})["keypoint"])
    inputs = {k: x[..., idx] for k, idx in channels.items()}
    assert not inputs["skeleton_jmotion"].any()  # still: no motion anywhere
    specs = {
        k: {"num_joints": 25, "num_bodies": 2, "channels": len(c)} for k, c in channels.items()
    }
    torch.manual_seed(0)
    net = build_recognizer(cfg.model, list(cfg.modality.streams), 4, specs).eval()
    with torch.no_grad():
        attention = net(inputs)["attention"]
    present = torch.ones(12, dtype=torch.bool)
    present[5:7] = False
    for name, w in attention.items():
        assert torch.all(w[0, present] > 1e-3), name
        assert torch.all(w[0, ~present] == 0), name
    # a motion stream on its own cannot tell still from absent: it keeps every frame
    alone = net.streams["skeleton_jmotion"](inputs["skeleton_jmotion"])[1]
    assert torch.all(alone[0] > 1e-3)
