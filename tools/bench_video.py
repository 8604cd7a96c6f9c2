"""Frames/s of skelact's RGB loading (decode + crop + resize + normalise) on the real NTU clip,
against plain OpenCV decoding of the same clip, in one run.

    python tools/bench_video.py [--path CLIP] [--repeats 3] [--size 224] [--frames 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import cv2

from skelact.data.media.video import load_rgb_clip, video_info

CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/ntu/videos/ntu_sample.avi"


def plain_decode(path: Path) -> int:
    """Read every frame with cv2.VideoCapture.read() (BGR, no conversion); returns the count."""
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function; calls interleave so that load from other
    processes weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", type=Path, default=CLIP, help="video decoded")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed decodes of each kind (the median is printed)"
    )
    ap.add_argument("--size", type=int, default=224, help="frames resized to size x size")
    ap.add_argument("--frames", type=int, default=16, help="frames sampled per clip in training")
    from skelact.cli import show_defaults

    show_defaults(ap)
    args = ap.parse_args()
    total, w, h, fps = video_info(args.path)
    print(
        f"clip {args.path.name}: {total} frames {w}x{h} @ {fps:g} fps; "
        f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads; median of {args.repeats}"
    )
    p, size = args.path, args.size
    t = timed(
        {
            "plain": lambda: plain_decode(p),
            "all": lambda: load_rgb_clip(p, total, size=size),
            "sampled": lambda: load_rgb_clip(p, args.frames, size=size),
        },
        args.repeats,
    )
    print(
        f"plain OpenCV decode (read all, BGR)            : {total / t['plain']:7.1f} frames/s "
        f"({t['plain'] * 1000:.0f} ms for {total} frames)"
    )
    print(
        f"load_rgb_clip all {total} frames, crop+resize {size}: {total / t['all']:7.1f} frames/s "
        f"({t['all'] * 1000:.0f} ms, output ({total}, 3, {size}, {size}))"
    )
    print(f"ratio skelact / plain decode                   : {t['plain'] / t['all']:7.2f}")
    print(
        f"load_rgb_clip {args.frames} sampled frames                 : "
        f"{t['sampled'] * 1000:7.0f} ms/clip = {1 / t['sampled']:.2f} clips/s "
        f"({t['sampled'] / t['plain']:.2f}x the time of a plain full decode)"
    )
    print(f"load average while running: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
