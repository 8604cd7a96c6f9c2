"""RGB frame loading: sample frame indices, crop the person, decode only what is needed.

NTU RGB clips are `nturgb+d_rgb/SsssCcccPpppRrrrAaaa_rgb.avi` (1920x1080, 30 fps, H.264).
A clip becomes a (T, 3, size, size) float tensor normalised with ImageNet's mean and std, the
input `skelact.models.encoders.FrameResNet` expects. Decoding runs in DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch

from skelact.data.prep.sampling import sample_indices

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_SCALE = torch.from_numpy(1 / (255 * IMAGENET_STD)).view(1, 3, 1, 1)
_SHIFT = torch.from_numpy(IMAGENET_MEAN / IMAGENET_STD).view(1, 3, 1, 1)

# Gaps (in frames) at least this long are skipped with a seek, shorter ones with grab().
# Seeking decodes again from the previous key frame: on the real NTU clip (one key frame for
# 72 frames) seeking 50 -> 60 cost 0.31 s where grabbing 10 frames cost 0.10 s. grab() decodes
# without colour conversion (~10 ms per 1080p frame here, read() ~19 ms), so it wins for any gap
# shorter than a GOP; NTU clips (< 300 frames) are therefore always read sequentially.
SEEK_MIN_GAP = 300


class VideoError(RuntimeError):
    """An unreadable or short video; the message names the file. `frames_read` counts the
    frames actually decoded before the error (-1 when the file could not be opened)."""

    def __init__(self, message: str, frames_read: int = -1):
        super().__init__(message)
        self.frames_read = frames_read


def _valid_points(xy: np.ndarray, frame_inds: Sequence[int], total: int | None) -> np.ndarray:
    """The finite, non-zero (P, 2) joint positions of all bodies at the sampled frames."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 4 or xy.shape[-1] != 2:
        raise ValueError(f"crop_box: xy must be (M, T, V, 2), got shape {xy.shape}")
    inds = np.asarray(frame_inds, dtype=np.int64)
    t_xy = xy.shape[1]
    if total and total != t_xy:  # skeleton and video lengths can differ by a few frames
        inds = np.floor(inds * t_xy / total).astype(np.int64)
    pts = xy[:, np.clip(inds, 0, t_xy - 1)].reshape(-1, 2)  # (M*T*V, 2)
    keep = np.isfinite(pts).all(1) & (np.abs(pts).sum(1) > 0)  # zeros = body/joint absent
    return pts[keep]


def crop_box(
    xy: np.ndarray | None,
    frame_inds: Sequence[int],
    img_w: int,
    img_h: int,
    margin: float = 0.15,
    total: int | None = None,
) -> tuple[int, int, int, int]:
    """A square box (x0, y0, x1, y1), exclusive ends, around all bodies' valid joints.

    xy: (M, T, V, 2) pixel positions (NTU colorX/colorY or depthX/depthY); zero rows are absent
    bodies. Only the frames in `frame_inds` count (mapped proportionally when the skeleton has a
    different length than `total`, the video's). The tight box grows by `margin` times its
    longer side on each side, becomes square, then is shifted and clipped into the image.
    Without a skeleton (or no valid joint) it is the centred square of side min(img_w, img_h).
    """
    pts = _valid_points(xy, frame_inds, total) if xy is not None else np.zeros((0, 2))
    if len(pts) == 0:
        side = min(img_w, img_h)
        x0, y0 = (img_w - side) // 2, (img_h - side) // 2
        return x0, y0, x0 + side, y0 + side
    (lx, ly), (hx, hy) = pts.min(0), pts.max(0)
    side = max(hx - lx, hy - ly, 1.0) * (1 + 2 * margin)
    side = min(side, img_w, img_h)
    cx, cy = (lx + hx) / 2, (ly + hy) / 2
    x0 = int(round(np.clip(cx - side / 2, 0, img_w - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, img_h - side)))
    s = int(round(side))
    return x0, y0, min(x0 + s, img_w), min(y0 + s, img_h)


def open_video(path: str | os.PathLike) -> cv2.VideoCapture:
    """An open OpenCV capture of `path`; VideoError naming the file when it cannot be read."""
    if not os.path.isfile(path):
        raise VideoError(f"video {path}: file does not exist")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(f"video {path}: OpenCV cannot open it (not a video or unknown codec)")
    return cap


def video_info(path: str | os.PathLike) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) from the container; frames may be 0 or wrong (see
    `count_frames`)."""
    cap = open_video(path)
    try:
        return capture_info(cap)
    finally:
        cap.release()


def capture_info(cap: cv2.VideoCapture) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of an open capture, from the container's header."""
    return (
        int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        float(cap.get(cv2.CAP_PROP_FPS)),
    )


def count_frames(path: str | os.PathLike) -> int:
    """The exact number of decodable frames (grabs them all: the header count can lie)."""
    cap = open_video(path)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def iter_frames(path: str | os.PathLike, indices: Sequence[int]) -> Iterator[np.ndarray]:
    """Yield the BGR (H, W, 3) uint8 frame at each index, in the given order (repeats allowed,
    indices must not decrease). Skips gaps with grab(), or a seek for gaps >= SEEK_MIN_GAP."""
    inds = [int(i) for i in indices]
    if any(b < a for a, b in zip(inds, inds[1:], strict=False)) or (inds and inds[0] < 0):
        raise ValueError(f"video {path}: frame indices must be >= 0 and non-decreasing")
    cap = open_video(path)
    pos, frame = 0, None  # pos: index of the next frame the decoder returns
    try:
        for idx in inds:
            if frame is not None and idx == pos - 1:
                yield frame  # repeated index
                continue
            if idx - pos >= SEEK_MIN_GAP:
                cap, pos = _seek(cap, path, idx, pos)
            while pos < idx:
                if not cap.grab():
                    raise VideoError(_short(path, idx, pos), frames_read=pos)
                pos += 1
            ok, frame = cap.read()
            if not ok or frame is None:
                raise VideoError(_short(path, idx, pos), frames_read=pos)
            pos += 1
            yield frame
    finally:
        cap.release()


def _seek(cap: cv2.VideoCapture, path, idx: int, pos: int) -> tuple[cv2.VideoCapture, int]:
    """Seek to frame idx; -> (capture, position). An inexact seek (some containers land on
    another frame) would return wrong frames silently, so it reopens the file and grabs."""
    if cap.set(cv2.CAP_PROP_POS_FRAMES, idx) and int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == idx:
        return cap, idx
    cap.release()
    return open_video(path), 0


def _short(path, idx: int, pos: int) -> str:
    return f"video {path}: frame {idx} requested but decoding stopped after {pos} frames"


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames at `indices` (non-decreasing) -> uint8 (T, H, W, 3) RGB."""
    frames = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in iter_frames(path, indices)]
    if not frames:
        raise ValueError(f"video {path}: no frame indices given")
    return np.stack(frames)


def crop_resize(frame: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop (H, W, C) to `box` and resize to (size, size, C) -> same dtype.

    Shrinking averages pixels (area): first by the largest integer factor, which OpenCV does
    about 2x faster than a fractional area resize (4.8 -> 2.2 ms for 1080 -> 224 here), then
    by the remaining fraction. Enlarging is bilinear.
    """
    x0, y0, x1, y1 = box
    patch = frame[y0:y1, x0:x1]
    k = min(patch.shape[0], patch.shape[1]) // size
    if k >= 2:
        h, w = patch.shape[0] // k, patch.shape[1] // k
        patch = cv2.resize(patch[: h * k, : w * k], (w, h), interpolation=cv2.INTER_AREA)
    shrink = patch.shape[0] > size or patch.shape[1] > size
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def load_rgb_clip(
    path: str | os.PathLike,
    num_frames: int,
    xy: np.ndarray | None = None,
    size: int = 224,
    train: bool = False,
    rng: np.random.Generator | None = None,
    margin: float = 0.15,
    span: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Sample `num_frames` frames, crop the person, resize -> float (T, 3, size, size).

    xy: (M, T, P, 2) pixel points to crop around (NTU's colorX/colorY joints, or the two corners
    of `skelact convert`'s "color_box": `skelact.data.media.features.crop_points`) or None for a
    centre crop. span: (start, stop) frames to sample from (default the whole video). Output is
    normalised with ImageNet mean/std (what FrameResNet expects).
    """
    total, w, h, _ = video_info(path)
    if total <= 0:  # some containers do not store a count
        total = count_frames(path)
    if (w <= 0 or h <= 0) and total > 0:  # nor a frame size
        h, w = next(iter_frames(path, [0])).shape[:2]
    if total <= 0:
        raise VideoError(f"video {path}: contains no decodable frame", frames_read=0)
    inds = _span_indices(total, span, num_frames, train, rng)
    try:
        frames = _decode_crop(path, inds, xy, w, h, size, margin, total)
    except VideoError as err:
        if err.frames_read <= 0:
            raise
        total = err.frames_read  # the header count lied: resample within what decodes
        inds = _span_indices(total, span, num_frames, train, rng)
        frames = _decode_crop(path, inds, xy, w, h, size, margin, total)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()  # (T, 3, S, S) 0-255
    x.mul_(_SCALE).sub_(_SHIFT)  # in place: (x / 255 - mean) / std
    return x.contiguous()


def _span_indices(total: int, span, num_frames: int, train: bool, rng) -> np.ndarray:
    """Sampled frame indices in [start, stop) of `span` (clipped to the video), or in the
    whole video when span is None."""
    start, stop = (0, total) if span is None else (max(0, span[0]), min(span[1], total))
    if stop <= start:
        raise ValueError(f"frame span {span} is empty in a video of {total} frames")
    return start + sample_indices(stop - start, num_frames, train, rng)


def _decode_crop(path, inds, xy, w, h, size, margin, total) -> list[np.ndarray]:
    box = crop_box(xy, inds, w, h, margin=margin, total=total)
    out = []
    for bgr in iter_frames(path, inds):
        out.append(cv2.cvtColor(crop_resize(bgr, box, size), cv2.COLOR_BGR2RGB))
    return out
