"""A real clip with two people, for trying per-person prediction.

MediaPipe finds one person in the full 1920x1080 NTU sample clip (the partner stands close
and half hidden). This writes the crop around the two men (720x880 at half size), as
recorded on the left and played backwards on the right: two real, differently moving people.

    python tools/two_people_clip.py ../shared/data/ntu/videos/ntu_sample.avi two_people.avi
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np


def two_people_clip(src: str, out: str) -> None:
    frames = []
    cap = cv2.VideoCapture(src)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(frame[160:1040, 560:1280], (360, 440)))
    cap.release()
    if not frames:
        raise SystemExit(f"{src}: no frame could be decoded")
    writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"MJPG"), 30, (720, 440))
    for a, b in zip(frames, frames[::-1], strict=True):
        writer.write(np.concatenate([a, b], 1))
    writer.release()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the NTU sample clip (shared/data/ntu/videos/ntu_sample.avi)")
    parser.add_argument("out", help="the video to write (.avi, MJPG)")
    from skelact.cli import show_defaults

    show_defaults(parser)
    args = parser.parse_args()
    two_people_clip(args.src, args.out)
