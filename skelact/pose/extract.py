"""One video -> one skeleton sample: MediaPipe PoseLandmarker (VIDEO mode) and person tracking.

Per frame and person MediaPipe gives 33 world landmarks (metres, origin at the mid-hip), 33
normalised image landmarks and their visibility. Frames without a person stay zeros with
`mask` False, they are not dropped. With several people, each detection is matched to a
track by its hip centre in the image (Hungarian assignment), so body index m is the same
person throughout the clip.

Axis convention (both layouts): NTU / Kinect v2 camera space. MediaPipe's world frame has x to
the image right, y down, z away from the camera; Kinect's has x to the camera's left, y up, z
away. In an ordinary (unmirrored) video the camera's left is the image left, so the change is
x = -x_mp, y = -y_mp, z = z_mp: a rotation by 180 deg about z, which never mirrors the body.
Mirrored videos, such as NTU's own RGB videos (their colorX grows with Kinect x, so the image
right is the camera's left), show a mirror image of the person: MediaPipe then calls the
person's right shoulder "left" and reconstructs a mirrored body. `mirrored=True` undoes both:
it flips the world x (x = +x_mp) and swaps BlazePose's left/right landmarks, so the left
shoulder is the person's own, on the image side NTU's colorX gives it. Image coordinates
("keypoint_2d") stay those of the video as stored, so overlays still match its pixels.
Skeletons stay hip-centred (spine base at the origin in every frame): a body's travel through
the room is lost, skelact's `Center` transform removes the rest of the translation anyway.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from skelact.layouts import MEDIAPIPE33, NTU25, POSE_LAYOUTS, mediapipe_to_ntu_matrix
from skelact.pose.quiet import native_quiet

# mediapipe world (x right, y down, z away) -> Kinect camera space (x left, y up, z away)
AXIS_SIGN = np.array([-1.0, -1.0, 1.0], np.float32)
HIPS = (23, 24)  # BlazePose left / right hip
# BlazePose landmark of the other side (nose 0 maps to itself): eyes, ears, mouth, limbs
MIRROR33 = [0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9] + [i + 1 - 2 * (i % 2 == 0) for i in range(11, 33)]
FREE_SLOT_COST = 0.3  # image-width units: a new person farther than this opens a new track


class PoseExtractionError(ValueError):
    """No skeleton from this video (missing, undecodable, no frames, no person); the message
    names the file. (Not `skelact.data.media.video.VideoError`: importing that module loads torch,
    which would cost every conversion worker seconds.)"""


class Tracker:
    """Keep `slots` person identities across frames by nearest hip centre (image coords)."""

    def __init__(self, slots: int):
        self.last = np.full((slots, 2), np.nan)  # last seen hip centre per slot

    def assign(self, centres: np.ndarray) -> list[int]:
        """Slot index for each of the (P, 2) detected centres, P <= slots."""
        # Unused slots cost a constant: an old track wins unless it is farther than that.
        dist = np.linalg.norm(centres[:, None] - self.last[None], axis=-1)  # (P, slots)
        cost = np.where(np.isnan(dist), FREE_SLOT_COST, dist)
        rows, cols = linear_sum_assignment(cost)
        slot = [0] * len(centres)
        for r, c in zip(rows, cols, strict=True):
            slot[r] = int(c)
            self.last[c] = centres[r]
        return slot


def read_frames(path: str | os.PathLike) -> tuple[Iterator[np.ndarray], dict[str, Any]]:
    """RGB (H, W, 3) uint8 frames of `path` and {"fps", "frames", "img_shape"} from the header."""
    from skelact.data.media.video import VideoError, capture_info, open_video

    try:
        cap = open_video(path)
    except VideoError as err:
        raise PoseExtractionError(str(err)) from None
    total, width, height, fps = capture_info(cap)
    info = {
        "fps": fps if np.isfinite(fps) and fps > 0 else 30.0,  # unknown rate: assume 30
        "frames": total,
        "img_shape": (height, width),
    }

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    return frames(), info


def open_landmarker(pose_model: str | os.PathLike, max_people: int = 1):
    """A PoseLandmarker in VIDEO mode for up to `max_people` poses (a context manager)."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.PoseLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(pose_model)),
        running_mode=vision.RunningMode.VIDEO,
        num_poses=max_people,
    )
    with native_quiet():
        return vision.PoseLandmarker.create_from_options(options)


class Landmarker:
    """PoseLandmarker (VIDEO mode) with its native log lines kept quiet (see `native_quiet`).

    `detect(rgb, ms)` -> the MediaPipe result; timestamps are made strictly increasing.
    """

    def __init__(self, pose_model: str | os.PathLike, max_people: int = 1):
        self._lm = open_landmarker(pose_model, max_people)
        self._last_ms = -1

    def detect(self, rgb: np.ndarray, ms: int):
        import mediapipe as mp

        ms = self._last_ms = max(int(ms), self._last_ms + 1)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        with native_quiet():
            return self._lm.detect_for_video(image, ms)

    def close(self) -> None:
        with native_quiet():
            self._lm.close()

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def extract_video(
    path: str | os.PathLike,
    pose_model: str | os.PathLike,
    max_people: int = 1,
    layout: str = "ntu25",
    on_frame: Callable[[], None] | None = None,
    mirrored: bool = False,
) -> dict[str, Any]:
    """Run PoseLandmarker over every frame of `path`; one annotation sample (label 0).

    Returns "keypoint" (M, T, V, 3) camera-space metres, "keypoint_2d" (M, T, V, 2) normalised
    image coords, "keypoint_score" (M, T, V) visibility, "mask" (M, T) bool, "color_box"
    (M, T, 4) each person's image box in pixels (see `person_boxes`), "total_frames",
    "img_shape", "fps", "video", "frame_dir", "label". M = tracks used (<= max_people).
    Raises PoseExtractionError for an unreadable video, one without frames or without any person.
    `mirrored`: the video is a mirror image (NTU's RGB videos are); see the module docstring.
    """
    if layout not in POSE_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {POSE_LAYOUTS}")
    frames, info = read_frames(path)
    world, image, score, mask = _track(frames, info["fps"], pose_model, max_people, on_frame)
    t = mask.shape[1]
    if t == 0:
        raise PoseExtractionError(f"video {path}: no frame could be decoded")
    if not mask.any():
        raise PoseExtractionError(f"video {path}: no person found in any of its {t} frames")
    used = mask.any(1)  # drop tracks never filled (fewer people than max_people)
    h, w = info["img_shape"]
    sample = {
        "frame_dir": Path(path).stem,
        "label": 0,
        "keypoint": world[used] * AXIS_SIGN,
        "keypoint_2d": image[used],
        "keypoint_score": score[used],
        "mask": mask[used],
        "color_box": person_boxes(image[used], mask[used], w, h),
        "total_frames": t,
        "img_shape": info["img_shape"],
        "fps": info["fps"],
        "video": str(path),
        "mirrored": bool(mirrored),
    }
    if mirrored:
        sample = unmirror(sample)
    return convert_layout(sample, layout)


def person_boxes(image: np.ndarray, mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Each person's box around all 33 image landmarks -> float32 (M, T, 4) pixels x0 y0 x1 y1,
    clipped to the image; zeros where the person is absent (mask False).

    image: (M, T, 33, 2) normalised landmark positions (MediaPipe's, before any layout mapping,
    so the box spans the face and feet). The RGB stream crops around these boxes
    (`skelact.data.media.features.crop_points`).
    """
    size = np.array([width, height], np.float32)
    lo = np.clip(image.min(2) * size, 0, size)  # (M, T, 2)
    hi = np.clip(image.max(2) * size, 0, size)
    box = np.concatenate([lo, hi], -1).astype(np.float32)  # (M, T, 4)
    box[~mask] = 0
    return box


def unmirror(sample: dict[str, Any]) -> dict[str, Any]:
    """A mediapipe33 sample of a mirrored video -> the person as seen unmirrored.

    World x flips (the reconstruction was of the mirror image) and left/right landmarks swap
    in "keypoint", "keypoint_2d" and "keypoint_score"; image coordinates keep their values.
    """
    out = dict(sample)
    out["keypoint"] = sample["keypoint"][:, :, MIRROR33] * np.float32([-1, 1, 1])
    for key in ("keypoint_2d", "keypoint_score"):
        out[key] = sample[key][:, :, MIRROR33]
    return out


def _track(frames, fps, pose_model, max_people, on_frame):
    """Arrays (M, T, 33, C) for world (C=3), image (C=2), score (M, T, 33), mask (M, T)."""
    per_frame = []
    tracker = Tracker(max_people)
    with Landmarker(pose_model, max_people) as landmarker:
        for i, rgb in enumerate(frames):
            # VIDEO mode needs increasing timestamps (ms); derive them from the index.
            result = landmarker.detect(rgb, round(i * 1000.0 / fps))
            per_frame.append(_frame_arrays(result, tracker, max_people))
            if on_frame is not None:
                on_frame()
    if not per_frame:
        empty = np.zeros((max_people, 0, 33), np.float32)
        return (
            empty[..., None].repeat(3, -1),
            empty[..., None].repeat(2, -1),
            empty,
            empty[..., 0] > 0,
        )
    world, image, score = (np.stack(arrs, 1) for arrs in zip(*per_frame, strict=True))
    return world, image, score, np.abs(world).sum((2, 3)) > 0


def _frame_arrays(result, tracker: Tracker, max_people: int):
    """One frame's (M, 33, 3) world, (M, 33, 2) image, (M, 33) visibility, by track slot."""
    world = np.zeros((max_people, 33, 3), np.float32)
    image = np.zeros((max_people, 33, 2), np.float32)
    score = np.zeros((max_people, 33), np.float32)
    if result.pose_landmarks:
        pts = np.asarray(
            [[(q.x, q.y, q.visibility or 0.0) for q in pose] for pose in result.pose_landmarks],
            np.float32,
        )  # (P, 33, 3)
        slots = tracker.assign(pts[:, HIPS, :2].mean(1))
        for p, m in enumerate(slots):
            world[m] = [(q.x, q.y, q.z) for q in result.pose_world_landmarks[p]]
            image[m], score[m] = pts[p, :, :2], pts[p, :, 2]
    return world, image, score


def convert_layout(sample: dict[str, Any], layout: str) -> dict[str, Any]:
    """Map a "mediapipe33" sample onto `layout` ("mediapipe33": unchanged, "ntu25": Kinect v2).

    Needs "keypoint" (M, T, 33, 3), "keypoint_2d" (M, T, 33, 2), "keypoint_score" (M, T, 33);
    rewrites them with V=25 for "ntu25" (each NTU joint the mean of its BlazePose landmarks, see
    `skelact.layouts.MEDIAPIPE_TO_NTU25`) and sets "layout". Axes are already Kinect's (see
    the module docstring). On a mirrored video, such as NTU's, convert with `mirrored=True`:
    otherwise the body is the mirror image of the person and "left" is their right.
    """
    out = dict(sample)
    if layout == "mediapipe33":
        out["layout"] = MEDIAPIPE33.name
        return out
    if layout != "ntu25":
        raise ValueError(f"unknown layout {layout!r}; known: {POSE_LAYOUTS}")
    w = mediapipe_to_ntu_matrix()  # (25, 33)
    for key in ("keypoint", "keypoint_2d"):
        out[key] = np.einsum("uv,mtvc->mtuc", w, sample[key]).astype(np.float32)
    out["keypoint_score"] = np.einsum("uv,mtv->mtu", w, sample["keypoint_score"]).astype(np.float32)
    out["layout"] = NTU25.name
    return out
