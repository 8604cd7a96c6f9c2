"""The synthetic NTU generator: real file format, determinism, geometry, noise, learnability."""

from __future__ import annotations

import numpy as np
import pytest

from skelact.data.sources.ntu import parse_name, split_of
from skelact.data.sources.ntu_skeleton import load_skeleton, load_skeleton_full
from skelact.data.synthetic import write_synthetic_ntu


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """6 actions x 8 subjects x 3 cameras x 2 replications = 288 files."""
    return write_synthetic_ntu(tmp_path_factory.mktemp("syn"), subjects=range(1, 9))


def test_names_and_count(files):
    assert len(files) == 6 * 8 * 3 * 2
    names = [parse_name(p) for p in files]
    assert {n.action for n in names} == set(range(1, 7))
    assert {n.camera for n in names} == {1, 2, 3} and {n.subject for n in names} == set(range(1, 9))
    assert files[0].name == "S001C001P001R001A001.skeleton"


def test_real_format(files):
    data = files[5].read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n") and data.endswith(b"\r\n")
    lines = data.decode().split("\r\n")
    frames = int(lines[0])
    i = 1
    for _ in range(frames):  # walk the structure by hand: every count matches its lines
        for _ in range(int(lines[i])):
            assert len(lines[i + 1].split()) == 10 and lines[i + 2] == "25"
            assert all(len(ln.split()) == 12 for ln in lines[i + 3 : i + 28])
            i += 27
        i += 1
    assert lines[i:] == [""]
    assert 40 <= frames <= 120


def test_frames_pixels_and_projection(files):
    lengths, bodies, lead_empty = [], [], 0
    for p in files:
        full = load_skeleton_full(p)
        kp, dxy, cxy = full["keypoint"][0], full["depth_xy"][0], full["color_xy"][0]
        present = kp.any(axis=(1, 2))
        lead_empty += not present[0]
        lengths.append(full["total_frames"])
        bodies.append(full["num_bodies"])
        d, c = dxy[present], cxy[present]
        assert (d >= 0).all() and (d[..., 0] < 512).all() and (d[..., 1] < 424).all()
        assert (c >= 0).all() and (c[..., 0] < 1920).all() and (c[..., 1] < 1080).all()
        x, y, z = np.moveaxis(kp[present], -1, 0)
        np.testing.assert_allclose(d[..., 0], 256 + 365 * x / z, atol=0.01)
        np.testing.assert_allclose(d[..., 1], 212 - 365 * y / z, atol=0.01)
    assert min(lengths) >= 40 and max(lengths) <= 120 and np.std(lengths) > 10
    assert 0.05 < np.mean(np.array(bodies) == 2) < 0.35  # occasional noise bodies
    assert 0.1 < lead_empty / len(files) < 0.5  # some clips start with empty frames


def test_deterministic(tmp_path):
    a = write_synthetic_ntu(tmp_path / "a", num_classes=2, subjects=(1,), seed=3)
    b = write_synthetic_ntu(tmp_path / "b", num_classes=2, subjects=(1,), seed=3)
    c = write_synthetic_ntu(tmp_path / "c", num_classes=2, subjects=(1,), seed=4)
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 12
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b, strict=True))
    assert a[0].read_bytes() != c[0].read_bytes()


def shoulder_yaw(path) -> float:
    """Angle (deg) of the left->right shoulder line in the camera's x-z plane."""
    kp = load_skeleton(path, 1)[0]
    kp = kp[kp.any(axis=(1, 2))]
    v = (kp[:, 8] - kp[:, 4]).mean(0)
    return float(np.degrees(np.arctan2(v[2], v[0])))


def test_camera_views(files):
    """As in NTU: R001 faces camera 2 (front) so camera 3 sees a side, camera 1 45 degrees."""
    by_name = {p.stem: p for p in files}
    yaws = {c: shoulder_yaw(by_name[f"S001C00{c}P002R001A003"]) for c in (1, 2, 3)}
    assert abs(yaws[2]) < 20
    assert 70 < abs(yaws[3]) < 110
    assert 25 < abs(yaws[1]) < 65
    assert abs(shoulder_yaw(by_name["S001C003P002R002A003"])) < 20  # R002 faces camera 3


def test_subjects_differ_in_size(files):
    heights = []
    for subject in (1, 2, 3, 4):
        kp = load_skeleton(files[0].parent / f"S001C002P00{subject}R001A001.skeleton", 1)[0]
        kp = kp[kp.any(axis=(1, 2))]
        heights.append(float(np.median(kp[:, 3, 1] - kp[:, 15, 1])))  # head - left foot
    assert 1.2 < min(heights) and max(heights) < 1.9
    assert max(heights) - min(heights) > 0.05


def features(path) -> np.ndarray:
    """Body-centred joints turned to face the camera (hips along x), 16 frames, plus spread."""
    kp = load_skeleton(path, 1)[0]
    kp = kp[kp.any(axis=(1, 2))]
    kp = kp - kp[:, :1]
    hip = (kp[:, 16] - kp[:, 12]).mean(0)
    a = np.arctan2(hip[2], hip[0])
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    kp = kp @ rot.T
    idx = np.linspace(0, len(kp) - 1, 16).round().astype(int)
    return np.concatenate([kp[idx].ravel(), 3 * kp.std(0).ravel()])


@pytest.mark.parametrize("protocol", ["xsub", "xview"])
def test_learnable(files, protocol):
    """A nearest-centroid classifier on simple features beats chance (1/6) by far."""
    x = np.stack([features(p) for p in files])
    y = np.array([parse_name(p).action for p in files])
    train = np.array([split_of(p.stem)[protocol] == "train" for p in files])
    assert 0 < train.sum() < len(files)
    centroids = np.stack([x[train & (y == c)].mean(0) for c in range(1, 7)])
    pred = 1 + np.argmin(((x[~train, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == y[~train]).mean() > 0.7


def test_rejects_unknown_actions_and_cameras(tmp_path):
    with pytest.raises(ValueError, match="num_classes must be 1..12"):
        write_synthetic_ntu(tmp_path, num_classes=13)
    with pytest.raises(ValueError, match="cameras must be among 1, 2, 3"):
        write_synthetic_ntu(tmp_path, cameras=(4,))
