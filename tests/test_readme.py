"""README.md's "Using a trained model" runs as written, from what `skelact demo` leaves behind,
and prints what the README shows (numbers and class names masked: here the demo model has
trained one epoch, the README's for the demo's 30)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import shared_data
from tools.readme_examples import README, blocks, prepare_workdir, run_all

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def masked(text: str, classes: list[str]) -> set[str]:
    """The distinct lines of `text` with class names -> <class>, numbers -> <n>, runs of
    spaces -> one (how many updates a live run prints depends on the machine's load)."""
    names = "|".join(re.escape(c) for c in sorted(classes, key=len, reverse=True))
    lines = set()
    for line in text.splitlines():
        line = re.sub(rf"(?<!\w)({names})(?!\w)", "<class>", line)
        line = NUMBER.sub("<n>", line)
        lines.add(re.sub(r"\[\s+", "[", re.sub(r"\s+", " ", line)).strip())
    return lines - {""}


def first_frames(video: Path, count: int, out: Path) -> Path:
    """The first `count` frames of `video` (a shorter clip keeps the test fast)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for _ in range(count):
        ok, frame = cap.read()
        assert ok, video
        writer.write(frame)
    writer.release()
    cap.release()
    return out


def test_readme_examples_run_and_print_what_the_readme_shows(tmp_path, pose_model, caplog):
    pytest.importorskip("onnxruntime", reason="the ONNX example needs the [onnx] extra")
    clip = shared_data("ntu", "videos", "ntu_sample.avi")
    from skelact.checkpoints import load_checkpoint
    from skelact.demo import run_demo

    demo = tmp_path / "skelact_demo"
    with caplog.at_level("INFO", logger="skelact"):  # as `skelact demo` logs
        run_demo(demo, epochs=1, benchmarks=("ntu60_xsub",), workers=1)
    # a demo run has the train.log that README's run directory lists (it had none)
    assert "epoch 1/1 loss" in (demo / "runs" / "ntu60_xsub" / "train.log").read_text()
    prepare_workdir(tmp_path / "work", demo, first_frames(clip, 40, tmp_path / "short.avi"))
    outputs = run_all(tmp_path / "work", in_process=True)  # `python tools/...` runs them apart
    shown = blocks(README.read_text())["output"]
    assert set(outputs) == set(shown) == {"api", "onnx", "live", "people"}
    classes = load_checkpoint(demo / "runs" / "ntu60_xsub" / "checkpoints" / "best.pt")["classes"]
    for name, out in outputs.items():
        assert masked(out, classes) == masked(shown[name][1], classes), name
    # what the live example wrote: beside the checkpoint's other outputs
    assert len(list((demo / "runs" / "ntu60_xsub" / "live").glob("clip_*.csv"))) == 1
