"""Benchmark `skelact convert` against a bare MediaPipe PoseLandmarker loop, and --workers.

    python tools/bench_convert.py [--clip ../shared/data/ntu/videos/ntu_sample.avi]

1. The same clip through (a) a bare loop: create a PoseLandmarker (VIDEO mode), decode every
   frame with OpenCV, convert to RGB, detect_for_video; (b) `convert_videos([clip], ...)` with
   one worker (decode, detect, track, layout, pickle + report). Runs alternate; the best of
   `--repeats` each is reported as frames/s, with the overhead of (b) over (a).
2. A folder of `--copies` links to the clip, converted with --workers 1 and --workers 2
   (alternating, best of `--worker-repeats`). Worker processes are spawned: their start-up
   (imports, one landmarker per video) is part of the time, as it is for a user.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from skelact.pose import convert_videos, ensure_pose_model
from skelact.pose.extract import open_landmarker

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "ntu" / "videos" / "ntu_sample.avi"


def _clock() -> np.ndarray:
    """(wall, CPU) seconds; CPU counts every thread of this process (MediaPipe's included)."""
    return np.array([time.perf_counter(), time.process_time()])


def bare_loop(clip: Path, model: Path) -> tuple[np.ndarray, int, int]:
    """(wall, CPU) seconds, frames, frames with a person: the plain MediaPipe Tasks loop."""
    import mediapipe as mp

    start = _clock()
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames = found = 0
    with open_landmarker(model, 1) as landmarker:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
            result = landmarker.detect_for_video(image, int(round(frames * 1000 / fps)))
            found += bool(result.pose_landmarks)
            frames += 1
    cap.release()
    return _clock() - start, frames, found


def timed_convert(inputs: list[Path], out: Path, model: Path, workers: int):
    """(wall, CPU of this process) seconds and the report of one `convert_videos` run."""
    start = _clock()
    report = convert_videos(inputs, out, pose_model=model, workers=workers, progress=False)
    return _clock() - start, report


def bench_overhead(clip: Path, model: Path, tmp: Path, repeats: int) -> int:
    """Part 1: convert vs bare loop on one clip, alternating runs; returns the frame count."""
    bare_loop(clip, model)  # warm-up: file cache, MediaPipe's first-run costs
    bare, conv = [], []
    for r in range(repeats):
        seconds, frames, found = bare_loop(clip, model)
        bare.append(seconds)
        seconds, report = timed_convert([clip], tmp / f"one{r}.pkl", model, 1)
        conv.append(seconds)
    b, c = np.min(bare, 0), np.min(conv, 0)  # best (wall, CPU) of the runs
    print(f"frames: {frames}; person found: bare loop {found}, convert {report['person_frames']}")
    for name, best, runs in (("bare MediaPipe loop", b, bare), ("skelact convert", c, conv)):
        walls = ", ".join(f"{frames / w:.1f}" for w, _ in runs)
        print(f"{name:20s} {frames / best[0]:5.1f} frames/s wall (runs: {walls}); "
              f"{1000 * best[1] / frames:.1f} CPU-ms/frame")  # fmt: skip
    print(f"convert overhead over bare loop: wall {100 * (c[0] / b[0] - 1):+.1f}%, "
          f"CPU {100 * (c[1] / b[1] - 1):+.1f}% (target <= +10%)")  # fmt: skip
    return frames


def bench_workers(clip: Path, model: Path, tmp: Path, copies: int, repeats: int, frames: int):
    """Part 2: a folder of `copies` links to the clip, --workers 1 vs 2, alternating."""
    folder = tmp / "clips"
    folder.mkdir()
    for i in range(copies):
        (folder / f"clip{i}{clip.suffix}").symlink_to(clip.resolve())
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(repeats):
        for workers in (1, 2):
            seconds, _ = timed_convert([folder], tmp / f"w{workers}_{r}.pkl", model, workers)
            times[workers].append(seconds[0])
    for workers, ts in times.items():
        runs = ", ".join(f"{t:.1f}" for t in ts)
        print(f"--workers {workers}: {min(ts):.1f} s for {copies} clips "
              f"({copies * frames / min(ts):.1f} frames/s; runs {runs} s)")  # fmt: skip
    print(f"speed-up of --workers 2 over --workers 1: {min(times[1]) / min(times[2]):.2f}x "
          f"on {os.cpu_count()} CPU cores")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="video converted")
    parser.add_argument(
        "--pose-model",
        type=Path,
        default=None,
        help="MediaPipe .task file (default: the bundled offline one)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=6,
        help="alternating runs of the bare loop and convert on the clip (best of them is printed)",
    )
    parser.add_argument(
        "--copies",
        type=int,
        default=4,
        help="links to the clip in the folder that --workers 1 and 2 convert",
    )
    parser.add_argument(
        "--worker-repeats", type=int, default=2, help="alternating runs of --workers 1 and 2"
    )
    from skelact.cli import show_defaults

    show_defaults(parser)
    args = parser.parse_args()
    if not args.clip.is_file():
        raise SystemExit(f"clip {args.clip} does not exist (pass --clip)")
    model = ensure_pose_model(args.pose_model)
    print(f"pose model: {model}\nclip: {args.clip}")
    with tempfile.TemporaryDirectory() as tmp:
        frames = bench_overhead(args.clip, model, Path(tmp), args.repeats)
        bench_workers(args.clip, model, Path(tmp), args.copies, args.worker_repeats, frames)


if __name__ == "__main__":
    main()
