"""A folder of class sub-folders cut from one real video, for trying the videos recipe.

Writes OUT/forward/clipK.avi (frames as recorded) and OUT/backward/clipK.avi (the same frames
played backwards): `clips` clips per class of `length` frames, starting at evenly spread
frames, resized to `width` pixels wide (MJPG). Two classes told apart by the direction of the
motion, from a real person, in the layout `skelact convert --labels-from-folders` reads.

    python tools/class_clips.py ../shared/data/ntu/videos/ntu_sample.avi videos/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def class_clips(
    src: str | Path, out: str | Path, clips: int = 5, length: int = 24, width: int = 480
) -> list[Path]:
    """Write the clips; returns their paths (forward clips first)."""
    cap = cv2.VideoCapture(str(src))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        frames.append(
            cv2.resize(frame, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        )
    cap.release()
    if len(frames) < length:
        raise SystemExit(f"{src}: {len(frames)} frames decoded, fewer than one clip ({length})")
    starts = np.linspace(0, len(frames) - length, clips).round().astype(int)
    paths = []
    for cls, order in (("forward", 1), ("backward", -1)):
        folder = Path(out) / cls
        folder.mkdir(parents=True, exist_ok=True)
        for k, s in enumerate(starts):
            path = folder / f"clip{k}.avi"
            size = frames[0].shape[1::-1]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
            for frame in frames[s : s + length][::order]:
                writer.write(frame)
            writer.release()
            paths.append(path)
    return paths


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="a video")
    p.add_argument("out", help="folder to write <class>/clipK.avi into")
    p.add_argument("--clips", type=int, default=5, help="clips per class")
    p.add_argument("--length", type=int, default=24, help="frames per clip")
    p.add_argument("--width", type=int, default=480, help="frame width in pixels")
    from skelact.cli import show_defaults

    show_defaults(p)
    a = p.parse_args()
    paths = class_clips(a.src, a.out, a.clips, a.length, a.width)
    print(f"wrote {len(paths)} clips under {a.out}")
