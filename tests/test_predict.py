"""`skelact predict` on the real NTU clip with a small NTU-layout checkpoint."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest

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
    assert out.with_suffix(".attention.png").stat().st_size > 1000
    timeline = pd.read_csv(js.with_suffix(".timeline.csv"))
    # 72 frames at 30 fps, 30-frame windows every 15 frames: starts 0, 15, 30
    assert list(timeline["start"]) == [0.0, 0.5, 1.0]
    assert (timeline["end"] - timeline["start"]).round(3).eq(1.0).all()
