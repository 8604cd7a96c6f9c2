"""The NTU RGB+D `.skeleton` parser.

A `.skeleton` file is CRLF text: the frame count; per frame the body count; per body a
10-field line starting with the tracking ID, the joint count (25) and 25 lines of
`x y z depthX depthY colorX colorY orientW orientX orientY orientZ trackingState`.

The parser follows only the count lines in Python and converts the joint lines of a file in
one C-level call (pandas' CSV reader; numpy's text readers are barely faster than `float()`),
converting only the columns asked for: about 3x a line-by-line reader (`tools/bench_parse.py`).
Which bodies are people, and in which actor slot, is decided in `skelact.data.sources.ntu_bodies`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.sources.ntu_bodies import select_bodies

NUM_JOINTS = 25
_COLUMNS = {"keypoint": slice(0, 3), "depth_xy": slice(3, 5), "color_xy": slice(5, 7)}


class SkeletonFormatError(ValueError):
    """A malformed .skeleton file; the message names the file and the line and/or frame."""


def _fail(name: str, problem: str) -> SkeletonFormatError:
    return SkeletonFormatError(f"NTU skeleton {name}: {problem}")


def _count(lines: list[bytes], i: int, n: int, name: str, what: str) -> int:
    if i >= n:
        raise _fail(name, f"the file ends before {what} (line {i + 1})")
    try:
        value = int(lines[i])
    except ValueError:
        text = lines[i].strip().decode("utf-8", "replace")[:40]
        raise _fail(name, f"line {i + 1}: expected {what}, got {text!r}") from None
    if value < 0:
        raise _fail(name, f"line {i + 1}: {what} is negative ({value})")
    return value


def _walk(lines: list[bytes], name: str) -> tuple[int, list[int], list[bytes], list[int]]:
    """Follow the count lines: T and, per body record, its frame, tracking ID, first joint line.

    The loop below trusts the file and builds no message; at the first thing it does not
    expect, `_walk_strict` walks again and says what is wrong, where.
    """
    n = len(lines) - (not lines[-1].strip())  # a final CRLF leaves one empty piece
    frames: list[int] = []
    ids: list[bytes] = []
    starts: list[int] = []
    try:
        num_frames = int(lines[0])
        i = 1
        for t in range(num_frames):
            num_bodies = int(lines[i])
            i += 1
            if num_bodies < 0:
                raise ValueError
            for _ in range(num_bodies):
                if int(lines[i + 1]) != NUM_JOINTS or i + 2 + NUM_JOINTS > n:
                    raise ValueError
                end = lines[i].find(b" ")  # the tracking ID: digits up to the first space
                if end <= 0 or not lines[i][:end].isdigit():
                    raise ValueError
                frames.append(t)
                ids.append(lines[i][:end])
                starts.append(i + 2)
                i += 2 + NUM_JOINTS
        if num_frames < 0 or any(lines[k].strip() for k in range(i, n)):
            raise ValueError
    except (ValueError, IndexError):
        return _walk_strict(lines, name)
    return num_frames, frames, ids, starts


def _walk_strict(lines: list[bytes], name: str) -> tuple[int, list[int], list[bytes], list[int]]:
    """`_walk` with a check and a message for every count; raises on the first bad one."""
    n = len(lines) - (not lines[-1].strip())
    num_frames = _count(lines, 0, n, name, "the frame count")
    frames, ids, starts = [], [], []
    i = 1
    for t in range(num_frames):
        num_bodies = _count(lines, i, n, name, f"the body count of frame {t + 1}")
        i += 1
        for b in range(num_bodies):
            where = f"frame {t + 1}, body {b + 1}"
            if i >= n:
                raise _fail(name, f"the file ends before the info line of {where} (line {i + 1})")
            num_joints = _count(lines, i + 1, n, name, f"the joint count of {where}")
            if num_joints != NUM_JOINTS:
                raise _fail(
                    name, f"line {i + 2}: {where} declares {num_joints} joints, expected 25"
                )
            if i + 2 + num_joints > n:
                raise _fail(
                    name,
                    f"frame {t + 1} declares {num_joints} joints but the file ends after "
                    f"{n - i - 2}",
                )
            frames.append(t)
            ids.append(lines[i].split(None, 1)[0] if lines[i].strip() else b"")
            starts.append(i + 2)
            i += 2 + num_joints
    extra = [k for k in range(i, n) if lines[k].strip()]
    if extra:  # a frame count edited down, or two files joined: reading on would guess
        raise _fail(
            name,
            f"the frame count (line 1) says {num_frames}, but {len(extra)} more non-empty "
            f"line(s) follow frame {num_frames}, from line {extra[0] + 1}",
        )
    return num_frames, frames, ids, starts


def _fast_table(block: bytes, rows: int, columns: int) -> np.ndarray | None:
    """(rows, columns) float64: the first `columns` of 12 space-separated values per line, or
    None when anything looks off (the strict path then finds the line)."""
    import pandas as pd  # imported here: only parsing needs it

    if block.count(b" ") != rows * 11:  # 12 fields a line, single spaces
        return None
    try:
        table = pd.read_csv(
            io.BytesIO(block), sep=" ", header=None, usecols=range(columns), dtype=np.float64,
            na_filter=False, engine="c", low_memory=False,
        ).to_numpy()  # fmt: skip
    except (ValueError, TypeError, OverflowError):  # pandas' ParserError is a ValueError
        return None
    if table.shape != (rows, columns) or not np.isfinite(table).all():
        return None
    return table


def _strict_table(lines: list[bytes], starts: list[int], frames: list[int], name: str, columns):
    """The slow path: parse line by line, raising on the first bad line; (B*V, columns)
    float64.

    Accepts what the fast path refuses but is valid: odd spacing, inf pixel positions (where
    Kinect could not project a joint).
    """
    out = np.empty((len(starts) * NUM_JOINTS, columns))
    for r, (s, t) in enumerate(zip(starts, frames, strict=True)):
        for j in range(NUM_JOINTS):
            try:
                values = [float(v) for v in lines[s + j].split()]
            except ValueError:
                values = []
            if len(values) != 12 or not np.isfinite(values[:3]).all():
                text = lines[s + j].strip().decode("utf-8", "replace")[:60]
                raise _fail(
                    name,
                    f"line {s + j + 1} (frame {t + 1}, joint {j + 1}): expected 12 numbers "
                    f"(finite x y z), got {text!r}",
                )
            out[r * NUM_JOINTS + j] = values[:columns]
    return out


def _parse(
    data: bytes, name: str, columns: int = 7
) -> tuple[int, list[int], list[bytes], np.ndarray]:
    """T, and per body record its frame, tracking ID and (V, columns) float32 joint values
    (x y z, then depthX depthY colorX colorY: converting only what is asked saves time)."""
    if not data.strip():
        raise _fail(name, "the file is empty")
    lines = data.split(b"\n")
    num_frames, frames, ids, starts = _walk(lines, name)
    if not starts:
        return num_frames, frames, ids, np.zeros((0, NUM_JOINTS, columns), np.float32)
    block = b"\n".join([b"\n".join(lines[s : s + NUM_JOINTS]) for s in starts])
    table = _fast_table(block, len(starts) * NUM_JOINTS, columns)
    if table is None:  # raises, or handles odd spacing
        table = _strict_table(lines, starts, frames, name, columns)
    values = table.reshape(len(starts), NUM_JOINTS, columns).astype(np.float32)
    return num_frames, frames, ids, values


def load_skeleton_full(
    path: str | os.PathLike,
    max_bodies: int = 2,
    extras: tuple[str, ...] = ("color_xy", "depth_xy"),
) -> dict[str, Any]:
    """Parse one .skeleton file once and return what is asked.

    Returns {"keypoint": (M, T, 25, 3) float32 x y z in metres, "color_xy" / "depth_xy" (M, T,
    25, 2) float32 pixel positions (those named in `extras`), "total_frames": T, "num_bodies":
    distinct tracking IDs in the file, "body_ids": the ID that opened each actor slot, most
    active first, "denoise": what `skelact.data.sources.ntu_bodies` dropped or merged (counts)}.
    M = max_bodies; body-frames where an actor is absent are zeros.
    """
    if max_bodies < 1:
        raise ValueError(f"max_bodies must be >= 1, got {max_bodies}")
    unknown = set(extras) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown extras {sorted(unknown)}; expected color_xy and/or depth_xy")
    path = Path(path)
    columns = max(_COLUMNS[key].stop for key in ("keypoint", *extras))
    num_frames, frames, ids, values = _parse(path.read_bytes(), path.name, columns)
    kept, seeds, counts = select_bodies(ids, frames, values[..., :3], max_bodies)
    frame_of = np.asarray(frames, dtype=np.int64)
    out: dict[str, Any] = {}
    for key in ("keypoint", *extras):
        cols = values[..., _COLUMNS[key]]
        arr = np.zeros((max_bodies, num_frames, NUM_JOINTS, cols.shape[-1]), np.float32)
        for m, records in enumerate(kept):
            arr[m, frame_of[records]] = cols[records]
        out[key] = arr
    out["total_frames"] = num_frames
    out["num_bodies"] = len(set(ids))
    out["body_ids"] = [seed.decode("ascii", "replace") for seed in seeds]
    out["denoise"] = counts
    return out


def load_skeleton(path: str | os.PathLike, max_bodies: int = 2) -> np.ndarray:
    """x y z of the `max_bodies` most active bodies: (M, T, 25, 3) float32, zeros where absent."""
    return load_skeleton_full(path, max_bodies, extras=())["keypoint"]
