"""Ordinary videos, RGB + skeleton, end to end through the commands of the README recipe:
a folder of class sub-folders (clips cut from the real NTU clip) -> `skelact convert` ->
`prepare features --modality rgb` -> `train --modality rgb+skeleton` -> `predict` on a new
video, its RGB features computed on the fly, and the same through the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import skelact
from skelact.contract import ContractError
from skelact.data.formats.annotations import load_annotations
from skelact.data.media.features import clip_features, crop_points, frame_encoder
from tests.conftest import ROOT

FRAMES, SIZE = 8, 112  # feature cache: frames per clip, crop size (small: CPU test)


def run(*args: str, cwd: Path) -> str:
    """`skelact ARGS` in a fresh process (this checkout's code) -> its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "skelact.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, f"skelact {' '.join(map(str, args))}:\n{res.stderr[-4000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def recipe(clip, pose_model, tmp_path_factory) -> dict:
    """Run convert -> prepare features -> train once; the paths and outputs."""
    from tools.class_clips import class_clips

    work = tmp_path_factory.mktemp("recipe")
    class_clips(clip, work / "videos", clips=5, length=12, width=480)
    pm = ("--pose-model", pose_model)
    conv = run(
        *("convert", "videos", "--out", "mine.store", "--layout", "ntu25"),
        *("--labels-from-folders", "--mirrored", *pm),
        cwd=work,
    )
    feats = run(
        *("prepare", "features", "--modality", "rgb", "--ann", "mine.store", "--root", "videos"),
        *("--out", "feats/rgb", "--frames", FRAMES, "--size", SIZE),  # packaged ImageNet weights
        *("--workers", "0"),
        cwd=work,
    )
    run(
        *("train", "--modality", "rgb+skeleton", "data=annotations", "data.ann_file=mine.store"),
        *("data.rgb.features=feats/rgb", f"data.rgb.num_frames={FRAMES}", "trainer.epochs=2"),
        *("trainer.threads=1", "trainer.num_workers=0", "trainer.progress=false"),
        "hydra.run.dir=run",
        cwd=work,
    )
    return {
        "work": work,
        "convert": conv,
        "features": feats,
        "ckpt": work / "run/checkpoints/last.pt",
    }


def test_convert_keeps_each_persons_image_box_and_video_path(recipe):
    assert "10 video(s) converted" in recipe["convert"]
    data = load_annotations(recipe["work"] / "mine.store")
    assert data["classes"] == ["backward", "forward"] and len(data["split"]["test"]) == 2
    for a in data["annotations"]:
        assert a["rgb_path"] == a["frame_dir"] + ".avi"  # "forward/clip3.avi", under videos/
        box, mask = np.asarray(a["color_box"]), np.asarray(a["mask"])
        h, w = a["img_shape"]
        assert box.shape == (1, a["total_frames"], 4) and (h, w) == (270, 480)
        on = box[mask]
        assert (on[:, 2] > on[:, 0]).all() and (on[:, 3] > on[:, 1]).all()
        assert on.min() >= 0 and on[:, [0, 2]].max() <= w and on[:, [1, 3]].max() <= h
        assert (box[~mask] == 0).all()
        # the person fills a part of the frame: NTU's two men, one of them tracked
        area = ((on[:, 2] - on[:, 0]) * (on[:, 3] - on[:, 1])).mean() / (h * w)
        assert 0.02 < area < 0.5
        # the box holds the person's NTU-layout joints (pixels from keypoint_2d)
        px = np.asarray(a["keypoint_2d"])[mask] * (w, h)  # (P, 25, 2)
        inside = (px >= on[:, None, :2] - 1) & (px <= on[:, None, 2:] + 1)
        assert inside.all(-1).mean() > 0.97


def test_two_input_folders_keep_their_videos_apart(recipe, pose_model):
    """`convert videos/forward videos/backward`: each folder has clip0..4.avi. Every sample's
    rgb_path is under the folder holding both (backward's clip0 was "clip0.avi" under its own
    input, as forward's: `prepare features --root videos/forward` encoded backward's samples
    from forward's videos, silently); prepare features finds that folder itself."""
    work = recipe["work"]
    out = run(
        *("convert", "videos/forward", "videos/backward", "--out", "two.store"),
        *("--layout", "ntu25", "--mirrored", "--pose-model", pose_model),
        cwd=work,
    )
    assert f"videos under {work / 'videos'} (prepare features" in out
    data = load_annotations(work / "two.store")
    paths = {a["frame_dir"]: a["rgb_path"] for a in data["annotations"]}
    assert paths["clip0"] == "forward/clip0.avi" and paths["clip0_2"] == "backward/clip0.avi"
    assert len(set(paths.values())) == 10
    feats = run(
        *("prepare", "features", "--modality", "rgb", "--ann", "two.store", "--out", "feats/two"),
        *("--frames", FRAMES, "--size", SIZE, "--workers", "0"),
        cwd=work,
    )
    assert "10 sample(s) encoded, 0 already cached, 0 without this modality, 0 failed" in feats
    settings = json.loads((work / "feats/two/index.json").read_text())
    sample = next(a for a in data["annotations"] if a["frame_dir"] == "clip0_2")
    own = clip_features(work / "videos/backward/clip0.avi", crop_points(sample, "rgb"), settings,
                        frame_encoder(settings))  # fmt: skip
    assert np.array_equal(np.load(work / "feats/two/clip0_2.npy"), own)


def test_prepare_features_crops_around_the_person(recipe):
    work = recipe["work"]
    assert (
        "10 sample(s) encoded, 0 already cached, 0 without this modality, 0 failed"
        in (recipe["features"])
    )
    settings = json.loads((work / "feats/rgb/index.json").read_text())
    enc = frame_encoder(settings)
    sample = next(
        a
        for a in load_annotations(work / "mine.store")["annotations"]
        if a["frame_dir"] == "forward/clip2"
    )
    cached = np.load(work / "feats/rgb/forward/clip2.npy")
    video = work / "videos/forward/clip2.avi"
    assert np.array_equal(clip_features(video, crop_points(sample, "rgb"), settings, enc), cached)
    centre = clip_features(video, None, settings, enc)  # what a crop-less cache would hold
    assert np.abs(centre.astype(np.float32) - cached).mean() > 0.05 * np.abs(cached).mean()


def test_rgb_skeleton_trains_and_keeps_how_its_features_were_made(recipe):
    metrics = json.loads((recipe["work"] / "run/metrics.json").read_text())
    assert metrics["num_samples"] == 2 and set(metrics["streams"]) == {
        "rgb",
        "skeleton_joint",
        "skeleton_bone",
        "skeleton_jmotion",
        "skeleton_bmotion",
        "skeleton_dist",
    }
    ck = torch.load(recipe["ckpt"], weights_only=True)
    index = json.loads((recipe["work"] / "feats/rgb/index.json").read_text())
    made = {k: v for k, v in index.items() if k not in ("samples", "sources")}  # per sample
    assert ck["specs"]["rgb"]["extractor"] == made


def test_predict_computes_rgb_features_on_a_new_video(recipe, clip, pose_model, capsys):
    """`skelact predict CLIP --mirrored --ckpt CKPT --topk 2 --json pred.json --window 1` on
    the full 1920x1080 clip (the training clips are 480 px cuts of it)."""
    from skelact.predict import predict_video

    work = recipe["work"]
    predict_video(clip, recipe["ckpt"], topk=2, json_out=work / "pred.json", window=1.0,
                  pose_model=pose_model, mirrored=True)  # fmt: skip
    assert "72 frames, person in 72" in capsys.readouterr().out
    res = json.loads((work / "pred.json").read_text())
    assert {t["name"] for t in res["top"]} == {"backward", "forward"}
    assert abs(sum(t["prob"] for t in res["top"]) - 1) < 1e-4
    # 1 s windows every 0.5 s and one ending with the video, each with its own RGB crop
    assert len(res["timeline"]) == 4 and res["timeline"][-1]["end"] == 2.4


def test_api_features_on_the_fly_equal_the_training_cache(recipe, pose_model):
    """A training video through `skelact.load(...).predict(path)`: the RGB features computed
    from it equal the cached ones bit for bit, so the prediction equals the one made from the
    stored sample and its cached features."""
    work = recipe["work"]
    model = skelact.load(recipe["ckpt"], pose_model=pose_model)
    video = work / "videos/backward/clip4.avi"
    sample = model.convert(video, mirrored=True)
    cached = np.load(work / "feats/rgb/backward/clip4.npy")
    assert np.array_equal(model.features(sample)["rgb"], cached)
    stored = next(
        a
        for a in load_annotations(work / "mine.store")["annotations"]
        if a["frame_dir"] == "backward/clip4"
    )
    from_video = model.predict(video, mirrored=True)
    from_cache = model.predict(dict(stored), features={"rgb": cached})
    np.testing.assert_allclose(from_video.probs, from_cache.probs, atol=1e-6)
    with pytest.raises(ContractError, match="live prediction reads skeletons"):
        model.stream(video)
    # an ONNX export computes the same features from the video: the extractor is in its contract
    pytest.importorskip("onnxruntime")
    from skelact.export import export_onnx

    onnx = skelact.load(export_onnx(recipe["ckpt"], work / "mine.onnx"), pose_model=pose_model)
    assert onnx.contract.streams["rgb"]["extractor"] == model.contract.streams["rgb"]["extractor"]
    np.testing.assert_allclose(
        onnx.predict(dict(stored), onnx.features(sample)).probs, from_cache.probs, atol=1e-5
    )


def test_per_person_prediction_crops_each_person(recipe, clip, pose_model, tmp_path):
    """A one-person fused model on a video of two people: each track's RGB features come from
    a crop around that person's own box."""
    from tools.two_people_clip import two_people_clip

    short = tmp_path / "short.avi"  # the clip's first 24 frames, full size (MJPG)
    cap, size = cv2.VideoCapture(str(clip)), (1920, 1080)
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for _ in range(24):
        writer.write(cap.read()[1])
    writer.release()
    cap.release()
    video = tmp_path / "two_people.avi"
    two_people_clip(str(short), str(video))
    model = skelact.load(recipe["ckpt"], pose_model=pose_model)
    sample = model.convert(video, max_people=2, mirrored=True)
    boxes = sample["color_box"]
    assert boxes.shape[:2] == (2, 24)
    centres = (boxes[..., 0] + boxes[..., 2]) / 2  # (2, T): one man per half of the frame
    assert abs(np.median(centres[0]) - np.median(centres[1])) > 200
    f0, f1 = model.features(sample, track=0)["rgb"], model.features(sample, track=1)["rgb"]
    settings = model.contract.streams["rgb"]["extractor"]
    enc = frame_encoder(settings)
    own0 = clip_features(video, crop_points({"color_box": boxes[:1]}, "rgb"), settings, enc)
    assert np.array_equal(f0, own0) and not np.array_equal(f0, f1)
    people = model.predict_people(sample)  # what `predict --max-people 2` prints
    assert [m for m, _ in people] == [0, 1]
    alone = model.predict(sample["keypoint"][1:2], {"rgb": f1})
    np.testing.assert_allclose(people[1][1].probs, alone.probs, atol=1e-6)
