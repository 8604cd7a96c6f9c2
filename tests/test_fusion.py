"""The fusion proof: a rendered set where RGB and skeleton each see only half of the classes."""

from __future__ import annotations

import numpy as np
import pytest

from skelact.data.media.depth import list_depth_frames, read_depth
from skelact.data.media.video import count_frames, read_frames
from skelact.data.sources.ntu_skeleton import load_skeleton_full
from skelact.data.synthetic import write_fusion_set
from skelact.demo import fusion_streams, per_class_top1, prepare_fusion_data, train_each_and_fused

NAME = "S001C001P003R001A00{}"


@pytest.fixture(scope="module")
def fusion_set(tmp_path_factory):
    """One twin quadruple (A001-A004 of one setup/camera/subject/replication), with depth."""
    out = tmp_path_factory.mktemp("fusion_set")
    dirs = write_fusion_set(out, subjects=(3,), cameras=(1,), replications=(1,))
    return dirs


def _skeleton(dirs, action: int) -> dict:
    return load_skeleton_full(dirs["skeletons"] / f"{NAME.format(action)}.skeleton", 1)


def test_twins_differ_only_where_designed(fusion_set):
    skel = {
        a: (fusion_set["skeletons"] / f"{NAME.format(a)}.skeleton").read_bytes()
        for a in (1, 2, 3, 4)
    }
    video = {
        a: (fusion_set["rgb"] / f"{NAME.format(a)}_rgb.avi").read_bytes() for a in (1, 2, 3, 4)
    }
    assert skel[1] == skel[2]  # red / blue cup: the skeleton cannot tell
    assert video[3] == video[4]  # reach forward / back: the picture cannot tell
    assert skel[3] != skel[4] and video[1] != video[2]
    fwd, back = _skeleton(fusion_set, 3)["keypoint"][0], _skeleton(fusion_set, 4)["keypoint"][0]
    np.testing.assert_allclose(fwd[..., :2], back[..., :2], atol=1e-5)  # same x, y everywhere
    t = int(np.argmin(fwd[:, 11, 2] - fwd[:, 8, 2]))  # hand farthest in front of the shoulder
    assert fwd[t, 11, 2] < fwd[t, 8, 2] - 0.25 < back[t, 8, 2] + 0.25 < back[t, 11, 2]
    frames = len(_skeleton(fusion_set, 1)["keypoint"][0])
    assert count_frames(fusion_set["rgb"] / f"{NAME.format(1)}_rgb.avi") == frames
    assert len(list_depth_frames(fusion_set["depth"] / NAME.format(3))) == len(fwd)


def test_cup_colour_at_the_skeleton_hand(fusion_set):
    """colorX/colorY of the hand point at the rendered cup: red for A001, blue for A002."""
    for action, (strong, weak) in ((1, (0, 2)), (2, (2, 0))):
        xy = _skeleton(fusion_set, action)["color_xy"][0]  # (T, 25, 2)
        path = fusion_set["rgb"] / f"{NAME.format(action)}_rgb.avi"
        for t in (0, len(xy) // 2):
            x, y = np.round(xy[t, 11]).astype(int)
            patch = read_frames(path, [t])[0, y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3)
            rgb = patch.astype(float).mean(0)
            assert rgb[strong] > rgb[weak] + 80, (action, t, rgb)


def test_depth_sees_the_reach_direction(fusion_set):
    """At the hand's depthX/depthY, A003's hand is in front (near its z), A004's far behind."""
    fwd = _skeleton(fusion_set, 3)
    t = int(np.argmin(fwd["keypoint"][0, :, 11, 2] - fwd["keypoint"][0, :, 8, 2]))
    x, y = np.round(fwd["depth_xy"][0, t, 11]).astype(int)
    mm = {a: int(read_depth(list_depth_frames(fusion_set["depth"] / NAME.format(a))[t])[y, x])
          for a in (3, 4)}  # fmt: skip
    assert abs(mm[3] - 1000 * fwd["keypoint"][0, t, 11, 2]) < 80
    assert mm[4] > mm[3] + 300


def test_fusion_streams_order():
    assert fusion_streams("skeleton+rgb") == ["rgb", "skeleton"]
    assert fusion_streams("depth+rgb+skeleton") == ["rgb", "skeleton", "depth"]


@pytest.mark.slow
def test_fusion_beats_the_best_single_stream(tmp_path):
    """Train rgb alone, skeleton alone and rgb+skeleton on the same cross-subject split.

    Twins make 0.75 the ceiling of either stream alone; the fused model must clear the best
    single stream by 0.15 (it reaches 1.0 when both streams learn their pair).
    """
    overrides = prepare_fusion_data(
        tmp_path, ["rgb", "skeleton"], seed=0, workers=2, num_frames=4, size=96, cameras=(1, 2)
    )
    results = train_each_and_fused(
        ["rgb", "skeleton"], [*overrides, "trainer.epochs=30"], tmp_path / "runs", seed=0
    )
    top1 = {k: m["top1"] for k, m in results.items()}
    per = {k: per_class_top1(tmp_path / "runs" / k.replace("+", "_")) for k in results}
    assert results["rgb"]["num_samples"] == 48  # subjects 3, 6, 7 x 2 cameras x 2 reps x 4
    for single in ("rgb", "skeleton"):
        assert 0.4 < top1[single] <= 0.75 + 1e-9, top1  # above chance, under the twin ceiling
    assert per["skeleton"][2:].mean() >= 0.8  # forward / back: the skeleton's pair
    assert per["rgb"][:2].mean() >= 0.7  # red / blue: the picture's pair
    assert top1["rgb+skeleton"] >= max(top1["rgb"], top1["skeleton"]) + 0.15, (top1, per)
