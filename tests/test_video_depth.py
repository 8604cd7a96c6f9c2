"""RGB and depth frame loading: the real NTU clip, crop boxes, a 16-bit depth fixture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from skelact.data.media import video
from skelact.data.media.depth import list_depth_frames, load_depth_clip, normalise_depth
from skelact.data.media.video import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VideoError,
    count_frames,
    crop_box,
    crop_resize,
    iter_frames,
    load_rgb_clip,
    read_frames,
    video_info,
)
from skelact.data.prep.sampling import sample_indices
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def clip() -> Path:
    return shared_data("ntu", "videos", "ntu_sample.avi")


def plain_decode(path: Path, keep: set[int]) -> tuple[int, dict[int, np.ndarray]]:
    """Sequential cv2 decode of the whole clip: (frame count, {index: RGB frame} for `keep`)."""
    cap, n, kept = cv2.VideoCapture(str(path)), 0, {}
    while True:
        ok, frame = cap.read()
        if not ok:
            return n, kept
        if n in keep:
            kept[n] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        n += 1


def test_real_clip_decodes_fully(clip):
    assert video_info(clip)[:3] == (72, 1920, 1080)
    shapes = [f.shape for f in iter_frames(clip, range(72))]
    assert len(shapes) == 72 and set(shapes) == {(1080, 1920, 3)}
    assert count_frames(clip) == 72


@pytest.mark.parametrize("seek_gap", [video.SEEK_MIN_GAP, 5])  # grab() path, then seek path
def test_sparse_read_equals_sequential_decode(clip, monkeypatch, seek_gap):
    monkeypatch.setattr(video, "SEEK_MIN_GAP", seek_gap)
    inds = [0, 3, 3, 17, 40, 41, 71]
    n, ref = plain_decode(clip, set(inds))
    frames = read_frames(clip, inds)
    assert n == 72 and frames.shape == (7, 1080, 1920, 3) and frames.dtype == np.uint8
    for k, i in enumerate(inds):
        assert np.array_equal(frames[k], ref[i]), f"frame {i} differs"


def test_video_errors_name_the_file(clip, tmp_path):
    with pytest.raises(VideoError, match=r"ntu_sample\.avi: frame 80 .* after 72 frames"):
        read_frames(clip, [10, 80])
    bad = tmp_path / "broken_rgb.avi"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match="broken_rgb.avi"):
        load_rgb_clip(bad, 4, size=32)
    with pytest.raises(VideoError, match="absent.avi: file does not exist"):
        load_rgb_clip(tmp_path / "absent.avi", 4)


def test_frame_count_lie_falls_back(clip, monkeypatch):
    monkeypatch.setattr(video, "video_info", lambda p: (200, 1920, 1080, 30.0))
    x = load_rgb_clip(clip, 4, size=32)  # indices planned for 200 frames, then resampled
    assert x.shape == (4, 3, 32, 32)
    monkeypatch.setattr(video, "video_info", lambda p: (0, 0, 0, 0.0))  # no header at all
    assert load_rgb_clip(clip, 4, size=32).shape == (4, 3, 32, 32)


def test_sample_indices():
    assert sample_indices(72, 4).tolist() == [9, 27, 45, 63]  # segment centres
    assert sample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]  # short clip repeats
    rng = np.random.default_rng(0)
    for _ in range(20):
        inds = sample_indices(80, 8, train=True, rng=rng)
        assert np.array_equal(inds // 10, np.arange(8)), inds  # one frame inside each segment
    draws = {tuple(sample_indices(100, 8, True, rng)) for _ in range(5)}
    assert len(draws) > 1  # training offsets are random


def test_crop_box_contains_joints_and_clips():
    xy = np.zeros((2, 10, 25, 2))  # body 1 absent (zeros)
    xy[0, :, :, 0] = np.linspace(800, 1000, 25)
    xy[0, :, :, 1] = np.linspace(300, 900, 25)
    x0, y0, x1, y1 = crop_box(xy, [0, 5], 1920, 1080)
    assert (x0, y0, x1, y1) == (510, 210, 1290, 990)  # 600 px tall * (1 + 2 * 0.15), square
    xy[0, 3, :, 0] += 850  # only frame 3 reaches the right edge
    assert crop_box(xy, [0, 5], 1920, 1080) == (510, 210, 1290, 990)
    x0, y0, x1, y1 = crop_box(xy, [3], 1920, 1080)
    assert x1 == 1920 and x1 - x0 == 780 and x0 <= 1650  # shifted inside, joints kept
    assert crop_box(None, [0], 1920, 1080) == (420, 0, 1500, 1080)
    assert crop_box(np.zeros((1, 5, 25, 2)), [0], 512, 424) == (44, 0, 468, 424)
    # a skeleton twice as long as the video: video frame 5 -> skeleton frame 10
    long = np.zeros((1, 20, 25, 2))
    long[0, 10] = [100, 100]
    assert crop_box(long, [5], 512, 424, margin=0, total=10) == (100, 100, 101, 101)


def test_load_rgb_clip_crop_and_normalisation(clip):
    xy = np.zeros((1, 72, 25, 2))
    xy[0, :, :, 0], xy[0, :, :, 1] = np.linspace(700, 1100, 25), np.linspace(200, 800, 25)
    x = load_rgb_clip(clip, 4, xy=xy, size=112)
    assert x.shape == (4, 3, 112, 112) and str(x.dtype) == "torch.float32"
    box = crop_box(xy, [9, 27, 45, 63], 1920, 1080)
    ref = crop_resize(read_frames(clip, [9, 27, 45, 63])[2], box, 112).astype(np.float32) / 255
    got = x[2].permute(1, 2, 0).numpy() * IMAGENET_STD + IMAGENET_MEAN
    assert np.abs(got - ref).max() < 1e-5


def write_depth_fixture(sample_dir: Path, T: int, person_mm=lambda t: 1000 + 100 * t) -> None:
    """NTU masked-depth layout: MDepth-%08d.png, 16-bit 512x424, a 100x250 px person at
    x 200-299, y 100-349 whose depth is person_mm(t) in frame t; a 7000 mm pixel (beyond the
    range) at (150, 250); background 0."""
    sample_dir.mkdir(parents=True)
    for t in range(T):
        img = np.zeros((424, 512), np.uint16)
        img[100:350, 200:300] = person_mm(t)
        img[150, 250] = 7000
        assert cv2.imwrite(str(sample_dir / f"MDepth-{t + 1:08d}.png"), img)


def person_xy(T: int) -> np.ndarray:
    xy = np.zeros((1, T, 25, 2))
    xy[0, :, :, 0], xy[0, :, :, 1] = np.linspace(200, 299, 25), np.linspace(100, 349, 25)
    return xy


def test_depth_clip_values(tmp_path):
    d = tmp_path / "S001C001P001R001A001"
    write_depth_fixture(d, 20)
    assert [p.name for p in list_depth_frames(d)][:2] == [
        "MDepth-00000001.png",
        "MDepth-00000002.png",
    ]
    x = load_depth_clip(d, 4, xy=person_xy(20), size=100)  # frames 2, 7, 12, 17
    assert x.shape == (4, 1, 100, 100)
    centre = x[:, 0, 50, 50].numpy()
    assert np.allclose(centre, [(1200 - 500) / 4000, 0.3, 0.425, 0.55])  # (mm - 500) / 4000
    # box: 249 px side * 1.3 = 324 px square around the person -> background at the edges
    assert x[:, 0, 0, 0].tolist() == [0.0] * 4 and x[:, 0, 50, 2].tolist() == [0.0] * 4
    fg = (x[0, 0] > 0).float().mean().item()
    assert abs(fg - 100 * 250 / 324**2) < 0.02
    assert x.max().item() == 1.0  # the 7000 mm pixel clips to 1
    assert np.allclose(
        normalise_depth(np.array([0, 300, 500, 2500, 4500, 9000])), [0, 0, 0, 0.5, 1, 1]
    )


def test_depth_centre_crop_and_errors(tmp_path):
    d = tmp_path / "S002C001P003R001A003"
    write_depth_fixture(d, 3, person_mm=lambda t: 2500)
    x = load_depth_clip(d, 6, size=53)  # no skeleton: the box around the person; frames repeat
    assert x.shape == (6, 1, 53, 53) and np.isclose(x[0, 0, 26, 26].item(), 0.5)
    assert np.array_equal(x[0], x[1])
    with pytest.raises(FileNotFoundError, match="no .png file"):
        load_depth_clip(tmp_path, 4)
    cv2.imwrite(str(d / "MDepth-00000002.png"), np.zeros((424, 512, 3), np.uint8))
    with pytest.raises(OSError, match="MDepth-00000002.png: expected a single-channel 16-bit"):
        load_depth_clip(d, 3)
