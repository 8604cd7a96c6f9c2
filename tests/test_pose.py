"""Pose extraction: the offline model bundle, MediaPipe on the real NTU clip, batch conversion.

The bundle is built once per session from the mediapipe 0.10.21 wheel (pip fetches it from
PyPI) and cached in `$SKELACT_CACHE` or `~/.cache/skelact`; nothing else downloads.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from skelact.data.formats.annotations import load_annotations
from skelact.data.formats.schema import num_classes
from skelact.pose import (
    collect_videos,
    convert_layout,
    convert_videos,
    ensure_pose_model,
    extract_video,
)
from skelact.pose import model as pose_model_mod
from skelact.pose.convert import ConvertError, _assemble, _warn_splits
from skelact.pose.extract import MIRROR33, Tracker
from skelact.pose.model import BUNDLE_MEMBERS, PoseModelError, verify_bundle
from tests.conftest import shared_data

SHORT_FRAMES = 12


@pytest.fixture(scope="module")
def clip_mp33(clip, pose_model) -> dict:
    return extract_video(clip, pose_model, max_people=1, layout="mediapipe33")


@pytest.fixture(scope="module")
def short_clip(clip, tmp_path_factory) -> Path:
    """The first 12 frames of the real clip re-encoded (MJPG): a fast video with a person."""
    path = tmp_path_factory.mktemp("short") / "short.avi"
    cap = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (960, 540))
    for _ in range(SHORT_FRAMES):
        ok, frame = cap.read()
        assert ok
        writer.write(cv2.resize(frame, (960, 540)))
    writer.release()
    cap.release()
    return path


def _input_normalisation(tflite: bytes) -> tuple[float, float]:
    from mediapipe.tasks.metadata import metadata_schema_py_generated as mfb
    from mediapipe.tasks.metadata import schema_py_generated as sfb

    model = sfb.Model.GetRootAsModel(tflite, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name() == b"TFLITE_METADATA":
            buf = model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
            meta = mfb.ModelMetadata.GetRootAsModelMetadata(buf, 0)
            unit = meta.SubgraphMetadata(0).InputTensorMetadata(0).ProcessUnits(0)
            opts = mfb.NormalizationOptions()
            opts.Init(unit.Options().Bytes, unit.Options().Pos)
            return float(opts.Mean(0)), float(opts.Std(0))
    raise AssertionError("no TFLITE_METADATA in the model")


def test_offline_bundle_has_both_models_with_normalisation(pose_model):
    with zipfile.ZipFile(pose_model) as zf:
        assert sorted(zf.namelist()) == sorted(BUNDLE_MEMBERS)
        assert _input_normalisation(zf.read("pose_detector.tflite")) == (127.5, 127.5)
        assert _input_normalisation(zf.read("pose_landmarks_detector.tflite")) == (0.0, 255.0)


def test_verify_bundle_rejects_bad_files(tmp_path):
    text = tmp_path / "model.task"
    text.write_text("not a model")
    with pytest.raises(PoseModelError, match="not a zip"):
        verify_bundle(text)
    half = tmp_path / "half.task"
    with zipfile.ZipFile(half, "w") as zf:
        zf.writestr("pose_detector.tflite", b"1234TFL3")
    with pytest.raises(PoseModelError, match="lacks.*pose_landmarks_detector"):
        verify_bundle(half)
    with pytest.raises(PoseModelError, match="does not exist"):
        verify_bundle(tmp_path / "missing.task")


def _url(folder: Path, name: str) -> str:
    return folder.as_uri() + "/" + name  # as_uri() would escape the {variant} braces


def test_ensure_pose_model_order_and_download(tmp_path, monkeypatch, pose_model):
    monkeypatch.setenv("SKELACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SKELACT_POSE_MODEL", raising=False)
    assert ensure_pose_model(pose_model) == pose_model  # a given path is used as is
    # Empty cache, download fails (a file:// URL that does not exist: no network involved).
    monkeypatch.setattr(pose_model_mod, "OFFICIAL_URL", _url(tmp_path, "no_{variant}"))
    with pytest.raises(PoseModelError, match="skelact pose-model --offline"):
        ensure_pose_model()
    # A "download" that is not a bundle is rejected and leaves nothing behind.
    (tmp_path / "bad_full").write_text("<html>error page</html>")
    monkeypatch.setattr(pose_model_mod, "OFFICIAL_URL", _url(tmp_path, "bad_{variant}"))
    with pytest.raises(PoseModelError, match="not a zip"):
        ensure_pose_model(offline=False)
    assert list((tmp_path / "cache").iterdir()) == []
    # A good download is verified, cached, then reused without the network.
    monkeypatch.setattr(pose_model_mod, "OFFICIAL_URL", pose_model.as_uri())
    got = ensure_pose_model()
    assert got == tmp_path / "cache" / "pose_landmarker_full.task"
    assert got.stat().st_size == pose_model.stat().st_size
    monkeypatch.setattr(pose_model_mod, "OFFICIAL_URL", _url(tmp_path, "no_{variant}"))
    assert ensure_pose_model() == got


def test_tracker_keeps_identities_when_detection_order_changes():
    tracker = Tracker(slots=3)
    a, b = np.array([0.2, 0.5]), np.array([0.7, 0.5])
    first = tracker.assign(np.stack([a, b]))
    assert first == [0, 1]
    for t in range(1, 10):
        a, b = a + 0.01, b - 0.01  # both drift; MediaPipe lists them in changing order
        dets = [b, a] if t % 2 else [a, b]
        slots = tracker.assign(np.stack(dets))
        assert slots == ([1, 0] if t % 2 else [0, 1])
    assert tracker.assign(b[None]) == [1]  # a missing for a frame: b keeps its slot
    far = np.array([0.05, 0.1])  # a newcomer far from both goes to the free slot
    assert tracker.assign(np.stack([far, a, b])) == [2, 0, 1]


def test_real_clip_detection_rate_and_shapes(clip_mp33):
    s = clip_mp33
    assert s["keypoint"].shape == (1, 72, 33, 3)
    assert s["keypoint_2d"].shape == (1, 72, 33, 2)
    assert s["keypoint_score"].shape == s["mask"].shape + (33,) == (1, 72, 33)
    assert (s["fps"], s["img_shape"], s["total_frames"]) == (30.0, (1080, 1920), 72)
    rate = s["mask"].mean()
    assert rate >= 0.95, f"person found in {s['mask'].sum()}/72 frames"  # measured 72/72
    xy = s["keypoint_2d"][0, s["mask"][0]]
    # The performer stands near the image centre (x 0.45-0.6 of the width).
    assert 0.4 < np.median(xy[:, 0, 0]) < 0.65 and 0.2 < np.median(xy[:, 0, 1]) < 0.45
    assert np.median(s["keypoint_score"][0, s["mask"][0]][:, [11, 12]]) > 0.9  # shoulders


def test_real_clip_ntu25_mapping_obeys_physics(clip_mp33):
    s = convert_layout(clip_mp33, "ntu25")
    assert s["keypoint"].shape == (1, 72, 25, 3) and s["layout"] == "ntu25"
    kp = s["keypoint"][0, s["mask"][0]]  # (T', 25, 3) metres, y up
    assert np.abs(kp[:, 0]).max() < 1e-3  # hip-centred: spine base at the origin
    assert np.all(kp[:, 3, 1] - kp[:, 0, 1] > 0.4)  # head well above spine base
    assert np.all(kp[:, 20, 1] > kp[:, 1, 1])  # spine shoulder above spine mid
    shoulder = np.median(np.linalg.norm(kp[:, 4] - kp[:, 8], axis=-1))
    upper_arm = np.median(np.linalg.norm(kp[:, [4, 8]] - kp[:, [5, 9]], axis=-1))
    assert 0.25 < shoulder < 0.5 and 0.2 < upper_arm < 0.4, (shoulder, upper_arm)
    # 180 deg about z: a person facing the camera has the shoulder MediaPipe calls left at the
    # smaller Kinect x (on NTU's mirrored clip that is the person's right: see the next test)
    assert np.mean(kp[:, 4, 0] < kp[:, 8, 0]) > 0.95


def _left_minus_right_x(kp: np.ndarray) -> float:
    """Median over frames of left shoulder x - right shoulder x (NTU joints 5 and 9)."""
    return float(np.median(kp[..., 4, 0] - kp[..., 8, 0]))


def test_mirrored_ntu_clip_has_the_left_shoulder_where_ntu_skeletons_have_it(clip_mp33):
    """NTU's own skeletons: the left shoulder has the smaller Kinect x AND the smaller colorX
    (the RGB videos are mirrored). `mirrored=True` must give both signs; the plain
    conversion agrees in camera space but puts "left" on the image's other side."""
    from skelact.data.sources.ntu_skeleton import load_skeleton_full
    from skelact.pose.extract import unmirror

    for f in sorted(shared_data("ntu", "skeletons").glob("*.skeleton")):
        ntu = load_skeleton_full(f, 1)
        valid = np.abs(ntu["keypoint"][0]).sum((1, 2)) > 0
        assert _left_minus_right_x(ntu["keypoint"][0, valid]) < -0.15, f.name  # metres
        assert _left_minus_right_x(ntu["color_xy"][0, valid]) < -50, f.name  # pixels
    for mirrored, image_sign in ((True, -1), (False, 1)):
        s = convert_layout(unmirror(clip_mp33) if mirrored else clip_mp33, "ntu25")
        kp, xy = s["keypoint"][0, s["mask"][0]], s["keypoint_2d"][0, s["mask"][0]]
        assert _left_minus_right_x(kp) < -0.15  # metres, Kinect camera space
        assert np.sign(_left_minus_right_x(xy)) == image_sign, mirrored
    # the flip: x negated and left/right landmarks swapped, image positions kept
    m = unmirror(clip_mp33)
    assert np.allclose(m["keypoint"][..., 0], -clip_mp33["keypoint"][..., MIRROR33, 0])
    assert np.array_equal(m["keypoint_2d"], clip_mp33["keypoint_2d"][:, :, MIRROR33])


def test_convert_mirrored_flag_reaches_the_samples(short_clip, pose_model, tmp_path):
    plain = convert_videos([short_clip], tmp_path / "a.pkl", "ntu25", pose_model=pose_model)
    flipped = convert_videos(
        [short_clip], tmp_path / "b.pkl", "ntu25", pose_model=pose_model, mirrored=True
    )
    assert (plain["mirrored"], flipped["mirrored"]) == (False, True)
    a = load_annotations(tmp_path / "a.pkl")["annotations"][0]
    b = load_annotations(tmp_path / "b.pkl")["annotations"][0]
    assert b["mirrored"] and not a["mirrored"]
    # left and right shoulders swap places in the image, and x flips in camera space
    np.testing.assert_allclose(b["keypoint_2d"][..., 4, :], a["keypoint_2d"][..., 8, :], atol=1e-6)
    np.testing.assert_allclose(b["keypoint"][..., 4, 0], -a["keypoint"][..., 8, 0], atol=1e-5)


def test_frame_without_person_is_masked_and_zero(tmp_path, short_clip, pose_model):
    """The real clip has a person in every frame: a black frame exercises the absent path."""
    path = tmp_path / "gap.avi"
    cap = cv2.VideoCapture(str(short_clip))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (960, 540))
    for i in range(6):
        ok, frame = cap.read()
        assert ok
        writer.write(np.zeros_like(frame) if i == 3 else frame)
    writer.release()
    cap.release()
    s = extract_video(path, pose_model, max_people=1, layout="mediapipe33")
    assert s["mask"].tolist() == [[True, True, True, False, True, True]]
    for layout in ("mediapipe33", "ntu25"):
        mapped = convert_layout(s, layout)
        for key in ("keypoint", "keypoint_2d", "keypoint_score"):
            assert np.all(mapped[key][0, 3] == 0) and np.abs(mapped[key][0, 2]).sum() > 0, key


def test_collect_videos_names_are_unique_across_calls(tmp_path):
    for rel in ("a/clip.mp4", "b/clip.mp4", "c/clip_2.mp4", "d/clip.mp4"):
        (tmp_path / rel).parent.mkdir()
        (tmp_path / rel).write_bytes(b"")
    files = [tmp_path / r for r in ("a/clip.mp4", "b/clip.mp4", "c/clip_2.mp4")]
    names = [n for _, n, _ in collect_videos(files)]
    assert names == ["clip", "clip_2", "clip_2_2"]
    # Converting into an existing file: its names are taken, new videos get free ones; the
    # path under the input folder (what `prepare features --root` joins) keeps its own name.
    got = collect_videos([tmp_path / "d", tmp_path / "b" / "clip.mp4"], taken=set(names))
    assert got == [
        (tmp_path / "d" / "clip.mp4", "clip_3", "clip.mp4"),
        (tmp_path / "b" / "clip.mp4", "clip_4", "clip.mp4"),
    ]
    nested = collect_videos([tmp_path])
    assert ("a/clip", "a/clip.mp4") in [(n, r) for _, n, r in nested]


def test_assemble_puts_every_fifth_clip_of_a_class_in_test():
    anns = [
        {"frame_dir": f"{cls}/{cls[0]}{i}", "video": f"/v/{cls}/{cls[0]}{i}.avi"}
        for cls in ("wave", "clap")
        for i in (6, 2, 4, 1, 5, 3)  # conversion order is not name order
    ]
    data = _assemble(anns, "ntu25", True, report={})
    assert data["classes"] == ["clap", "wave"]
    assert sorted(data["split"]["test"]) == ["clap/c5", "wave/w5"]
    assert len(data["split"]["train"]) == 10 and len(data["split"]["all"]) == 12
    assert {a["frame_dir"]: a["label"] for a in anns}["wave/w1"] == 1


def _write_black_video(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    for _ in range(frames):
        writer.write(np.zeros((240, 320, 3), np.uint8))
    writer.release()


def test_convert_skips_bad_videos_reports_them_and_resumes(tmp_path, short_clip, pose_model):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "good.avi").symlink_to(short_clip)
    (folder / "text.mp4").write_text("this is not a video")
    (folder / "empty.mp4").write_bytes(b"")
    _write_black_video(folder / "black.avi", 8)
    _write_black_video(folder / "noframes.avi", 0)
    out = tmp_path / "out" / "poses.pkl"
    inputs = [folder, tmp_path / "missing.mp4"]
    report = convert_videos(inputs, out, pose_model=pose_model, progress=False)
    reasons = {Path(f["video"]).name: f["reason"] for f in report["failed"]}
    assert report["converted"] == 1 and len(reasons) == 5
    assert "does not exist" in reasons["missing.mp4"]
    assert "cannot open" in reasons["text.mp4"] and "cannot open" in reasons["empty.mp4"]
    assert "no person found in any of its 8 frames" in reasons["black.avi"]
    assert "no frame could be decoded" in reasons["noframes.avi"]
    on_disk = json.loads(out.with_name("poses.pkl.report.json").read_text())
    assert len(on_disk["failed"]) == 5
    data = load_annotations(out)
    (ann,) = data["annotations"]
    assert ann["frame_dir"] == "good" and ann["label"] == 0 and data["classes"] == ["unknown"]
    assert ann["keypoint"].shape == (1, SHORT_FRAMES, 33, 3) and ann["mask"].sum() >= 11
    again = convert_videos(inputs, out, pose_model=pose_model, progress=False)
    assert (again["converted"], again["skipped_existing"], len(again["failed"])) == (0, 1, 5)
    assert len(load_annotations(out)["annotations"]) == 1
    with pytest.raises(ValueError, match="converted without --mirrored: convert these without"):
        convert_videos(inputs, out, pose_model=pose_model, progress=False, mirrored=True)
    (tmp_path / "none").mkdir()  # a folder without videos: said so, no report of nothing
    with pytest.raises(ConvertError, match=r"no video in .*none: give video files, or folders"):
        convert_videos([tmp_path / "none"], tmp_path / "n.pkl", pose_model=pose_model)
    assert not (tmp_path / "n.pkl.report.json").exists()


def test_convert_labels_from_folders_in_parallel(tmp_path, short_clip, pose_model, capsys):
    root = tmp_path / "videos"
    for cls, clip_name in (("wave", "w1"), ("clap", "c1"), ("clap", "c2")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / f"{clip_name}.avi").symlink_to(short_clip)
    out = tmp_path / "mine.pkl"
    report = convert_videos(
        [root], out, layout="ntu25", workers=2, labels_from_folders=True,
        pose_model=pose_model, progress=False,
    )  # fmt: skip
    assert report["converted"] == 3 and report["failed"] == []
    data = load_annotations(out)
    assert data["classes"] == ["clap", "wave"] and num_classes(data) == 2
    labels = {a["frame_dir"]: a["label"] for a in data["annotations"]}
    assert labels == {"clap/c1": 0, "clap/c2": 0, "wave/w1": 1}
    # At most two clips a class: none is a fifth, so "test" is empty (filling it: see above).
    assert sorted(data["split"]["train"]) == sorted(labels) and data["split"]["test"] == []
    said = capsys.readouterr().out
    assert "warning: no test clip: every 5th clip" in said and "one class only" not in said
    kps = [a["keypoint"] for a in data["annotations"]]
    assert all(k.shape == (1, SHORT_FRAMES, 25, 3) for k in kps)
    # The same frames give the same skeleton, whichever worker process converted them.
    np.testing.assert_allclose(kps[0], kps[2], atol=1e-5)


def test_native_log_lines_are_quiet_but_errors_are_not(short_clip, pose_model, capfd):
    from skelact.pose.quiet import native_quiet, set_verbose

    extract_video(short_clip, pose_model, max_people=1, layout="ntu25")
    err = capfd.readouterr().err
    assert "INFO:" not in err and "WARNING:" not in err, err
    with native_quiet():
        os.write(2, b"INFO: chatter\nE0000 00:00 real problem\n")
    assert capfd.readouterr().err == "E0000 00:00 real problem\n"
    with pytest.raises(RuntimeError), native_quiet():
        os.write(2, b"INFO: context before the failure\n")
        raise RuntimeError("native call failed")
    assert "context before the failure" in capfd.readouterr().err
    with pytest.raises(KeyboardInterrupt), native_quiet():  # Ctrl-C: no native failure
        os.write(2, b"INFO: model loading chatter\nE0000 00:00 real problem\n")
        raise KeyboardInterrupt
    assert capfd.readouterr().err == "E0000 00:00 real problem\n"
    try:
        set_verbose(True)
        with native_quiet():
            os.write(2, b"INFO: shown with --verbose\n")
    finally:
        set_verbose(False)
    assert "shown with --verbose" in capfd.readouterr().err


def test_videos_outside_class_folders_make_one_class_and_say_so(capsys):
    _warn_splits({"classes": ["flat"], "split": {"train": ["a"], "test": ["b"]}})
    said = capsys.readouterr().out
    assert "warning: one class only ('flat')" in said and "no test clip" not in said
