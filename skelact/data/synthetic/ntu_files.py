"""Synthetic NTU performances written as real `.skeleton` files (see the package docstring)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skelact.data.sources.ntu import NTUName
from skelact.data.synthetic.motion import (
    ACTIONS,
    REST,
    action_controls,
    pose_from_controls,
    rot_x,
    subject_style,
)

_LEAVES = [3, 15, 19, 21, 22, 23, 24]  # Kinect writes no orientation for these
_BASE_FRAMES = {1: 90, 2: 100, 3: 100, 4: 90, 5: 60, 6: 80, 7: 60, 8: 75, 9: 70, 10: 70,
                11: 110, 12: 110}  # fmt: skip
_CAMERA_AZIMUTH = {1: 0.0, 2: -45.0, 3: 45.0}
_FACING = {1: -45.0, 2: 45.0}  # replication -> azimuth the performer faces (camera 2, camera 3)
_DEPTH_CAM = (365.0, 256.0, 212.0)  # focal length, cx, cy in depth pixels (512 x 424)
_COLOR_CAM = (1060.0, 960.0, 540.0, 0.04)  # ... in colour pixels (1920 x 1080), x baseline (m)
_ROW = " ".join(["%.7G"] * 11 + ["%d"])
_BLOCK = "\r\n".join([_ROW] * 25)


def _performance(seed: int, name: NTUName) -> np.ndarray:
    """(T, 25, 3) body-frame joints of one performance, shared by all cameras."""
    style = subject_style(seed, name.subject)
    rng = np.random.default_rng([seed, 2, name.setup, name.subject, name.replication, name.action])
    frames = round(_BASE_FRAMES[name.action] * style["speed"] * rng.uniform(0.9, 1.1))
    s = np.linspace(0.0, 1.0, int(np.clip(frames, 40, 120)))
    warped = s + rng.uniform(-0.05, 0.05) * np.sin(np.pi * s)  # timing differs per take
    c = action_controls(name.action, warped, style["cycles"] * rng.uniform(0.9, 1.1))
    c["bend"] = c["bend"] + style["lean"]
    joints = pose_from_controls(c, style["size"])
    sway = 0.015 * np.sin(2 * np.pi * (s * rng.uniform(0.5, 1.5) + rng.uniform()))
    joints[..., 0] += sway[:, None]
    return joints


def _to_camera(joints: np.ndarray, name: NTUName, seed: int, rng) -> np.ndarray:
    """Body frame -> Kinect camera space (x right in the image, y up, z depth, metres)."""
    facing = _FACING[1 + (name.replication - 1) % 2]
    yaw = np.deg2rad(facing - _CAMERA_AZIMUTH[name.camera] + rng.normal(0.0, 4.0))
    setup = np.random.default_rng([seed, 3, name.setup])
    height, dist, tilt = setup.uniform(-0.1, 0.3), setup.uniform(2.6, 3.4), setup.uniform(-4, 4)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ rot_x(np.deg2rad([tilt]))[0].T
    pos = np.array([rng.normal(0, 0.15), height, dist + rng.normal(0, 0.1)])
    return joints @ rot.T + pos


def file_rows(xyz: np.ndarray, yaw_q: tuple[float, float], state: np.ndarray) -> np.ndarray:
    """(T, 25, 12) file rows: x y z depthX depthY colorX colorY orientWXYZ trackingState."""
    f, cx, cy = _DEPTH_CAM
    fc, ccx, ccy, base = _COLOR_CAM
    x, y, z = xyz[..., 0], xyz[..., 1], np.maximum(xyz[..., 2], 0.3)
    quat = np.zeros((*x.shape, 4))
    quat[..., 0], quat[..., 2] = yaw_q
    quat[:, _LEAVES] = 0.0
    pix = [cx + f * x / z, cy - f * y / z, ccx + fc * (x + base) / z, ccy - fc * y / z]
    return np.concatenate([xyz, np.stack(pix, -1), quat, state[..., None]], -1)


def add_sensor_noise(xyz: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Joint jitter (more at the hands) and rare glitches (a joint jumps, marked inferred)."""
    T = len(xyz)
    sigma = np.full(25, 0.004)
    sigma[[6, 7, 10, 11, 21, 22, 23, 24]] = 0.009
    xyz = xyz + rng.normal(0.0, 1.0, xyz.shape) * sigma[:, None]
    state = np.full((T, 25), 2.0)
    glitch = rng.random(T) < 0.03
    joints = rng.choice([6, 7, 10, 11, 14, 18, 21, 23], size=glitch.sum())
    xyz[glitch, joints] += rng.normal(0.0, 0.06, (glitch.sum(), 3))
    state[glitch, joints] = 1.0
    return xyz, state


def _noise_body(T: int, rng) -> tuple[int, np.ndarray]:
    """A short-lived false detection: a squashed, tilted skeleton somewhere in the room."""
    k = int(rng.integers(2, 9))
    start = int(rng.integers(0, max(T - k, 1)))
    shape = REST * rng.uniform(0.4, 0.9, 3) @ rot_x(np.array([rng.uniform(-1.2, 1.2)]))[0].T
    pos = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-0.6, 0.4), rng.uniform(2.0, 4.0)])
    xyz = shape + pos + rng.normal(0.0, 0.03, (min(k, T - start), 25, 3))
    return start, xyz


def skeleton_text(T: int, bodies: list[tuple[int, int, np.ndarray]], rng) -> str:
    """The .skeleton text (CRLF) of bodies given as (ID, first frame, rows (k, 25, 12))."""
    per_frame: list[list[str]] = [[] for _ in range(T)]
    for body_id, start, rows in bodies:
        lean = rng.normal(0.0, 0.05, 2)
        head = f"{body_id} 0 1 1 1 1 0 {lean[0]:.7G} {lean[1]:.7G} 2\r\n25"
        for t, r in enumerate(rows, start):
            per_frame[t].append(head + "\r\n" + _BLOCK % tuple(r.ravel().tolist()))
    lines = [str(T)]
    for texts in per_frame:
        lines.append(str(len(texts)))
        lines.extend(texts)
    return "\r\n".join(lines) + "\r\n"


def _sample_text(joints: np.ndarray, name: NTUName, seed: int, noise_body_prob: float,
                 empty_start_prob: float) -> str:  # fmt: skip
    rng = np.random.default_rng([seed, 4, *name])
    xyz, state = add_sensor_noise(_to_camera(joints, name, seed, rng), rng)
    half = np.deg2rad(_FACING[1 + (name.replication - 1) % 2] - _CAMERA_AZIMUTH[name.camera]) / 2
    rows = file_rows(xyz, (np.cos(half), np.sin(half)), state)
    lead = int(rng.integers(1, 6)) if rng.random() < empty_start_prob else 0
    body_id = 72057594037927936 + int(rng.integers(1000, 20000))
    bodies = [(body_id, lead, rows[lead:])]
    if rng.random() < noise_body_prob:
        start, nxyz = _noise_body(len(rows), rng)
        nrows = file_rows(nxyz, (1.0, 0.0), np.ones(nxyz.shape[:2]))
        bodies.append((body_id + int(rng.integers(1, 50)), start, nrows))
    return skeleton_text(len(rows), bodies, rng)


def write_synthetic_ntu(
    out_dir: str | os.PathLike,
    num_classes: int = 6,
    subjects: Sequence[int] = (1, 2, 3, 4, 5, 6),
    cameras: Sequence[int] = (1, 2, 3),
    replications: Sequence[int] = (1, 2),
    seed: int = 0,
    setups: Sequence[int] = (1,),
    noise_body_prob: float = 0.15,
    empty_start_prob: float = 0.3,
) -> list[Path]:
    """Write SsssCcccPpppRrrrAaaa.skeleton files for actions 1..num_classes (at most 12).

    One file per setup x camera x subject x replication x action; 40-120 frames each. The same
    seed gives the same bytes. Returns the paths, sorted.
    """
    if not 1 <= num_classes <= len(ACTIONS):
        raise ValueError(f"num_classes must be 1..{len(ACTIONS)}, got {num_classes}")
    bad = sorted(set(cameras) - set(_CAMERA_AZIMUTH))
    if bad:
        raise ValueError(f"cameras must be among 1, 2, 3 (NTU's), got {bad}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for setup in setups:
        for subject in subjects:
            for rep in replications:
                for action in range(1, num_classes + 1):
                    joints = _performance(seed, NTUName(setup, 1, subject, rep, action))
                    for camera in cameras:
                        name = NTUName(setup, camera, subject, rep, action)
                        text = _sample_text(joints, name, seed, noise_body_prob, empty_start_prob)
                        path = out / f"{name}.skeleton"
                        path.write_bytes(text.encode("ascii"))
                        paths.append(path)
    return sorted(paths)
