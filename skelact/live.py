"""Live prediction: `skelact predict --live SOURCE` and `Model.stream(source)`.

A reader thread takes frames from a camera index, a stream URL or a video file (a file is
read at its own frame rate, as a camera would deliver it) into a one-frame slot. The main
loop takes the newest frame, runs MediaPipe on it and keeps the poses of the last `window`
seconds; every `every` seconds of source time it classifies that window. When pose
extraction is slower than the source, frames arriving while the slot is full replace the
waiting one and are counted as dropped: nothing queues, so the labels never fall behind.
Each update reports its pose and model latency and how long after the newest frame arrived
it came out (lag).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Update:
    time: float  # source time of the newest frame in the window, s
    label: int  # -1: nobody in the window
    name: str
    prob: float
    frames: int  # frames with poses in the window
    pose_ms: float  # MediaPipe on the newest frame
    model_ms: float  # preprocessing + network on the window
    lag_s: float  # from the newest frame's arrival to this update
    dropped: int  # frames dropped so far
    probs: np.ndarray | None = None  # class probabilities (not in the timeline CSV)


class Grabber(threading.Thread):
    """Frames into a one-slot buffer; a frame still waiting when the next arrives is dropped."""

    def __init__(self, source):
        super().__init__(daemon=True)
        self.is_file = Path(str(source)).is_file()
        src = int(source) if str(source).isdigit() and not self.is_file else str(source)
        self.cap = cv2.VideoCapture(src)
        if not self.cap.isOpened():
            self.cap.release()
            text = str(source)
            missing = not (text.isdigit() or "://" in text or Path(text).exists())
            what = "no such file" if missing else "OpenCV cannot open it (not a video, no camera?)"
            raise ValueError(f"live source {source}: {what}")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if np.isfinite(fps) and fps > 0 else 30.0
        self.cond = threading.Condition()
        self.slot, self.read, self.dropped = None, 0, 0
        self.done = self.stopped = False

    def run(self) -> None:
        start = time.perf_counter()
        try:
            while not self.stopped:
                ok, bgr = self.cap.read()
                if not ok:
                    break
                t = self.read / self.fps if self.is_file else time.perf_counter() - start
                if self.is_file:  # deliver at the file's own rate
                    time.sleep(max(0.0, start + t - time.perf_counter()))
                with self.cond:
                    self.dropped += self.slot is not None
                    self.slot = (t, time.perf_counter(), bgr)
                    self.read += 1
                    self.cond.notify()
        finally:
            self.cap.release()
            with self.cond:
                self.done = True
                self.cond.notify()

    def take(self):
        """(source time, arrival time, BGR frame) of the newest frame; None at the end."""
        with self.cond:
            while self.slot is None and not self.done and not self.stopped:
                self.cond.wait(0.5)
            item, self.slot = self.slot, None
            return item


class LiveStream:
    """Iterate for `Update`s; `summary()` afterwards (also after Ctrl-C)."""

    def __init__(self, model, source, window=2.0, every=0.5, mirrored=False, pose_model=None):
        # refused here, before a thread or MediaPipe starts: a failure later would leave both
        for name, value in (("window", window), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"live {name} must be a number of seconds > 0, got {value!r}")
        if not isinstance(source, int | str | os.PathLike) or isinstance(source, bool):
            raise TypeError(
                f"live source must be a camera index, a stream URL or a video file's path, "
                f"got {type(source).__name__}"
            )
        self.model, self.source = model, source
        self.window, self.every, self.mirrored = window, every, mirrored
        self.pose_model = pose_model or model.pose_model
        self.updates: list[Update] = []
        self.pose_ms: list[float] = []
        self.grabber: Grabber | None = None
        self.wall = 0.0
        self._gen = None
        self._stopping = False

    def __iter__(self):
        self._gen = self._run()
        return self._gen

    def close(self) -> None:
        """Stop the reader and the landmarker (what Ctrl-C in the consumer's loop needs)."""
        if self._gen is not None:
            self._gen.close()

    def stop(self) -> None:
        """End the iteration after the frame in hand; safe to call from a signal handler."""
        self._stopping = True
        if self.grabber is not None:
            self.grabber.stopped = True

    def _run(self):
        from skelact.pose.extract import Landmarker, Tracker, _frame_arrays
        from skelact.pose.model import ensure_pose_model

        self.model.warmup()
        m = self.model.contract.num_bodies
        # the source first: one that will not open fails before MediaPipe starts
        self.grabber = grab = Grabber(self.source)
        try:
            landmarker = Landmarker(ensure_pose_model(self.pose_model), m)
        except BaseException:
            grab.cap.release()  # the reader thread, which would release it, never started
            raise
        tracker, poses = Tracker(m), deque()  # (source time, (M, 33, 3) world)
        start, due = time.perf_counter(), self.window
        grab.start()
        try:
            while not self._stopping and (item := grab.take()) is not None:
                t, arrived, bgr = item
                tic = time.perf_counter()
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                world = _frame_arrays(landmarker.detect(rgb, t * 1000), tracker, m)[0]
                self.pose_ms.append(1000 * (time.perf_counter() - tic))
                poses.append((t, world))
                # the window's frames: times in (t - window, t], to a microsecond (frame times
                # i / fps: 8/30 <= 38/30 - 1 is False in floating point, and 31 frames stayed)
                while poses and poses[0][0] <= t - self.window + 1e-6:
                    poses.popleft()
                if t + 1e-6 >= due:
                    due = max(due + self.every, t + 1e-6)  # after drops: the next step ahead
                    yield self._update(t, arrived, poses)
        finally:
            grab.stopped = True
            # the reader releases the capture itself: wait for it, so that no native decoding
            # is still running when the interpreter exits (after Ctrl-C that aborted the process)
            grab.join(timeout=5)
            landmarker.close()
            self.wall = time.perf_counter() - start

    def _update(self, t: float, arrived: float, poses) -> Update:
        from skelact.contract import order_by_activity
        from skelact.pose.extract import AXIS_SIGN, convert_layout, unmirror

        tic = time.perf_counter()
        world = np.stack([w for _, w in poses], 1)  # (M, T, 33, 3)
        present = np.abs(world).sum((2, 3)) > 0  # (M, T)
        label, name, prob, probs = -1, "(nobody)", 0.0, None
        if present.any():
            # convert_layout maps image coords and scores too: stand-ins of their shape here
            sample = {"keypoint": world * AXIS_SIGN, "keypoint_2d": world[..., :2]}
            sample["keypoint_score"] = world[..., 0]
            if self.mirrored:
                sample = unmirror(sample)
            kp = convert_layout(sample, self.model.contract.layout)["keypoint"]
            kp = kp[order_by_activity(kp, present)]
            res = self.model.predict(kp)
            label, name, prob, probs = res.label, res.name, res.prob, res.probs
        now = time.perf_counter()
        up = Update(
            round(t, 3), label, name, prob, int(present.any(0).sum()), self.pose_ms[-1],
            1000 * (now - tic), now - arrived, self.grabber.dropped, probs,
        )  # fmt: skip
        self.updates.append(up)
        return up

    def summary(self) -> dict:
        """Frames read / processed / dropped, processed frames/s, latency and lag figures."""
        g, ups = self.grabber, self.updates
        med = lambda xs: round(float(np.median(xs)), 2) if len(xs) else None  # noqa: E731
        p95 = lambda xs: round(float(np.percentile(xs, 95)), 2) if len(xs) else None  # noqa: E731
        return {
            "source": str(self.source),
            "source_fps": g.fps if g else None,
            "frames_read": g.read if g else 0,
            "frames_processed": len(self.pose_ms),
            "frames_dropped": g.dropped if g else 0,
            "processed_fps": round(len(self.pose_ms) / self.wall, 2) if self.wall else None,
            "updates": len(ups),
            "pose_ms_median": med(self.pose_ms),
            "pose_ms_p95": p95(self.pose_ms),
            "model_ms_median": med([u.model_ms for u in ups]),
            "model_ms_p95": p95([u.model_ms for u in ups]),
            "lag_s_median": med([u.lag_s for u in ups]),
            "lag_s_max": round(max(u.lag_s for u in ups), 3) if ups else None,
        }

    def timeline(self) -> list[dict]:
        return [{k: v for k, v in asdict(u).items() if k != "probs"} for u in self.updates]


def timeline_path(ckpt: str | Path, source, when: float | None = None) -> Path:
    """Where `predict --live` writes its timeline by default: beside the checkpoint's other
    outputs, <run dir>/live/<source>_<time>.csv (the run dir is the folder above
    checkpoints/, else the checkpoint's own folder); <source> is a video's stem, cameraN or
    stream."""
    from skelact.checkpoints import checkpoint_file

    ckpt = checkpoint_file(ckpt)  # a run directory: its checkpoints/last.pt
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    text = str(source)
    if text.isdigit() and not Path(text).is_file():
        name = f"camera{text}"
    elif "://" in text:
        name = "stream"
    else:
        name = Path(text).stem
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(when))
    return run_dir / "live" / f"{name}_{stamp}.csv"


def stream(model, source, window=2.0, every=0.5, mirrored=False, pose_model=None) -> LiveStream:
    return LiveStream(model, source, window, every, mirrored, pose_model)
