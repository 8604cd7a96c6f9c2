"""`skelact predict` on the real NTU clip with a small NTU-layout checkpoint."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import skelact
from skelact.predict import predict_video


def test_predict_real_clip_with_render_json_and_timeline(ntu_ckpt, clip, pose_model, tmp_path):
    out = tmp_path / "pred.mp4"
    js = tmp_path / "pred.json"
    res = predict_video(
        clip,
        ntu_ckpt,
        topk=3,
        json_out=js,
        render=out,
        window=1.0,
        stride=0.5,
        pose_model=pose_model,
        mirrored=True,  # NTU's RGB videos are mirror images
    )
    probs = [t["prob"] for t in res["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert res["frames"] == 72 and res["frames_with_person"] >= 65
    att = res["attention"]
    # one weight per sampled frame, the frames in order inside the video, times = frame / fps
    assert len(att["weight"]) == len(att["frame"]) == 16 and min(att["weight"]) >= 0
    assert att["frame"] == sorted(att["frame"]) and 0 <= att["frame"][0] < att["frame"][-1] < 72
    np.testing.assert_allclose(att["time_s"], np.array(att["frame"]) / res["fps"], atol=1e-3)
    assert json.loads(js.read_text())["top"][0]["name"] == res["top"][0]["name"]
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 72
    cap.release()
    assert cv2.imread(str(out.with_suffix(".attention.png"))).shape[:2] == (250, 800)  # one row
    timeline = pd.read_csv(js.with_suffix(".timeline.csv"))
    # 72 frames at 30 fps, 30-frame windows every 15 frames: starts 0, 15, 30, and 42, the
    # last one ending with the video (its frames 60-71 were left out before)
    assert list(timeline["start"]) == [0.0, 0.5, 1.0, 1.4] and timeline["end"].max() == 2.4
    assert (timeline["end"] - timeline["start"]).round(3).eq(1.0).all()


def test_unwritable_outputs_are_refused_before_the_pose_pass(ntu_ckpt, clip, tmp_path):
    """A --json that is a folder, a --render OpenCV cannot write (it used to say "rendered"
    and write no video), both after minutes of pose work on a long video: refused first, by
    name; a missing folder is made."""
    (tmp_path / "adir").mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path / 'adir'} is a folder: give a file name"):
        predict_video(clip, ntu_ckpt, json_out=tmp_path / "adir", pose_model="no/such/model")
    with pytest.raises(ValueError, match=r"--render .*out.webm: OpenCV cannot write a video"):
        predict_video(clip, ntu_ckpt, render=tmp_path / "out.webm", pose_model="no/such/model")
    assert not (tmp_path / "out.webm").exists()
    from skelact.pose.model import PoseModelError

    with pytest.raises(PoseModelError):  # past the outputs' check: the pose model is next
        predict_video(clip, ntu_ckpt, json_out=tmp_path / "new" / "p.json", window=1.0,
                      pose_model=tmp_path / "no_model.task")  # fmt: skip
    assert (tmp_path / "new").is_dir()


@pytest.fixture(scope="module")
def two_people_clip(clip, tmp_path_factory) -> Path:
    """Two real people side by side (tools/two_people_clip.py): the NTU clip's crop around
    its two men, as recorded and played backwards. MediaPipe finds only one person in the
    full 1920x1080 frame (the partner stands close, half hidden)."""
    from tools.two_people_clip import two_people_clip

    path = tmp_path_factory.mktemp("two") / "two_people.avi"
    two_people_clip(str(clip), str(path))
    return path


def test_one_person_model_labels_each_tracked_person(
    ntu_ckpt, two_people_clip, pose_model, tmp_path
):
    js, out = tmp_path / "people.json", tmp_path / "people.mp4"
    res = predict_video(
        two_people_clip, ntu_ckpt, topk=2, json_out=js, render=out, max_people=2,
        mirrored=True, pose_model=pose_model, window=1.0,
    )  # fmt: skip
    people = res["people"]
    assert [p["track"] for p in people] == [0, 1] and min(p["frames"] for p in people) >= 65
    sample = skelact.load(ntu_ckpt, pose_model=pose_model).convert(two_people_clip, 2, True)
    model = skelact.load(ntu_ckpt)
    for p in people:  # each entry is that person's own prediction
        alone = model.predict(sample["keypoint"][p["track"] : p["track"] + 1])
        assert p["top"][0]["name"] == alone.name
        assert abs(p["top"][0]["prob"] - alone.prob) < 1e-6
    assert json.loads(js.read_text())["people"][1]["track"] == 1
    assert set(pd.read_csv(js.with_suffix(".timeline.csv"))["track"]) == {0, 1}
    # the attention plot has a row per person (it showed person 0 only): 2 x 2.1 + 0.4 inches
    assert cv2.imread(str(out.with_suffix(".attention.png"))).shape[0] == 460
    # the label is drawn above each person's head: red text (BGR ~ (0, 0, 200)) there
    cap = cv2.VideoCapture(str(out))
    for _ in range(20):
        ok, frame = cap.read()
    cap.release()
    h, w = frame.shape[:2]
    for m in (0, 1):
        head = (sample["keypoint_2d"][m, 19] * (w, h)).astype(int)
        y0 = int((sample["keypoint_2d"][m, 19, :, 1].min()) * h)
        x0, x1 = max(0, head[:, 0].min() - 10), head[:, 0].max() + 200
        box = frame[max(0, y0 - h // 8) : y0, x0:x1]
        red = (box[..., 2] > 120) & (box[..., 1] < 80) & (box[..., 0] < 80)
        assert red.sum() > 20, m


def test_two_person_model_sees_the_scene_most_active_first(two_people_clip, pose_model, tmp_path):
    from tests.conftest import train_toy_checkpoint

    ckpt = train_toy_checkpoint(tmp_path, bodies=2)
    model = skelact.load(ckpt, pose_model=pose_model)
    sample = model.convert(two_people_clip, mirrored=True)
    variance = [sample["keypoint"][m, sample["mask"][m]].var(0).sum() for m in (0, 1)]
    assert variance[0] >= variance[1] > 0
    # max_people given: the same order (it was the tracker's slots, and a two-body model's
    # prediction of that sample differed from predict(video)'s)
    given = model.convert(two_people_clip, 2, mirrored=True)
    np.testing.assert_array_equal(given["keypoint"], sample["keypoint"])
    res = predict_video(two_people_clip, ckpt, max_people=2, mirrored=True, pose_model=pose_model)
    assert "people" not in res
    np.testing.assert_allclose(res["top"][0]["prob"], model.predict(sample).prob, atol=1e-6)


def test_live_on_the_real_clip_drops_rather_than_queues(ntu_ckpt, clip, pose_model):
    model = skelact.load(ntu_ckpt, pose_model=pose_model, threads=1)
    live = model.stream(clip, window=1.0, every=0.25, mirrored=True)
    updates = list(live)
    s = live.summary()
    assert s["frames_read"] == 72 and s["frames_processed"] + s["frames_dropped"] == 72
    assert len(updates) >= 3 and updates[0].time >= 1.0 - 1e-6
    # due every 0.25 s of source time, the k-th at 1.0 + 0.25 k or later: an update comes with
    # the first processed frame at or after its due time (a late one does not pull the next in)
    times = np.array([u.time for u in updates])
    assert np.all(times >= 1.0 + 0.25 * np.arange(len(times)) - 1e-6)
    assert np.all(np.diff(times) > 0)
    assert all(u.pose_ms > 0 and u.model_ms > 0 and 0 <= u.lag_s < 2 for u in updates)
    # a file is delivered at its own rate: 72 frames at 30 fps take about 2.4 s
    assert live.wall >= 2.3
    # at most one window of poses: 1 s at 30 fps (31 before, frame times in floating point)
    assert all(u.frames <= 30 for u in updates)


def looped_clip(clip: Path, dst: Path, times: int = 4, width: int = 640) -> Path:
    """The clip `times` over, scaled to `width`: a source long enough (about 10 s at its own
    rate) that Ctrl-C lands before it ends even when a loaded machine is slow to start."""
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while (ok := cap.read())[0]:
        img = ok[1]
        frames.append(cv2.resize(img, (width, img.shape[0] * width // img.shape[1])))
    cap.release()
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for _ in range(times):
        for img in frames:
            out.write(img)
    out.release()
    return dst


def test_live_ctrl_c_ends_cleanly_and_writes_the_timeline(ntu_ckpt, clip, pose_model, tmp_path):
    out = tmp_path / "live.csv"
    source = looped_clip(clip, tmp_path / "looped.avi")
    cmd = [sys.executable, "-m", "skelact.cli", "predict", "--live", str(source), "--ckpt",
           str(ntu_ckpt), "--window", "0.5", "--every", "0.25", "--timeline", str(out),
           "--pose-model", str(pose_model), "--mirrored"]  # fmt: skip
    # started with SIGINT ignored, as a shell's background jobs are (and the whole suite when
    # it runs as one): a Python child then gets no KeyboardInterrupt unless it asks for SIGINT
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore
    )
    lines = []
    while not any(" pose " in line for line in lines):
        lines.append(proc.stdout.readline())
        assert lines[-1] or proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped (Ctrl-C)" in rest and "Traceback" not in err
    assert "INFO:" not in err and "WARNING:" not in err  # MediaPipe's native lines stay quiet
    timeline = pd.read_csv(out)
    assert 1 <= len(timeline) < 30 and set(timeline.columns) >= {"time", "name", "pose_ms"}
    assert json.loads(out.with_suffix(".json").read_text())["updates"] == len(timeline)


def test_live_outputs_are_checked_before_the_stream(ntu_ckpt, clip, tmp_path):
    """--out x.json: the summary (written beside the CSV as .json) overwrote the timeline and
    the run said "timeline -> x.json"; --out FOLDER failed after the whole live session."""
    from skelact.predict import predict_live

    with pytest.raises(ValueError, match=r"--out .*tl.json: the timeline is a CSV"):
        predict_live(clip, ntu_ckpt, out=tmp_path / "tl.json", pose_model="no/such/model")
    (tmp_path / "outdir").mkdir()
    with pytest.raises(ValueError, match=r"outdir is a folder: give a file name"):
        predict_live(clip, ntu_ckpt, out=tmp_path / "outdir", pose_model="no/such/model")


def test_live_source_shorter_than_the_window_says_so(ntu_ckpt, clip, pose_model, tmp_path):
    out = tmp_path / "short.csv"
    cmd = [sys.executable, "-m", "skelact.cli", "predict", "--live", str(clip), "--ckpt",
           str(ntu_ckpt), "--window", "10", "--timeline", str(out), "--pose-model",
           str(pose_model), "--mirrored"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no update: the source ended before the first 10.0s window filled" in res.stdout
    assert json.loads(out.with_suffix(".json").read_text())["updates"] == 0
