"""The fusion set: rendered RGB videos and depth maps, plus skeletons, for 4 classes in two pairs
that only one modality each can tell apart (see below)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skelact.data.sources.ntu import NTUName
from skelact.data.synthetic.motion import (
    REST,
    action_controls,
    bump,
    lerp,
    pose_from_controls,
    subject_style,
)
from skelact.data.synthetic.ntu_files import add_sensor_noise, file_rows, skeleton_text

# ---------------------------------------------------------------------------- fusion set
# Four classes in two pairs, each pair separable by one modality only:
#   A001/A002: the same drinking motion, the cup in the hand is red / blue -> only RGB tells.
#   A003/A004: the right arm reaches forward / backward: mirror images along the camera axis,
#   the same pictures under the orthographic RGB camera (drawn in a fixed order) -> only the
#   skeleton (and depth) tell.
# The two classes of a pair are twins: every random draw (motion, timing, placement, scale,
# background, clothes, noise) is seeded without the class, so A001 and A002 of one
# setup/camera/subject/replication have byte-identical .skeleton files, and A003 and A004
# byte-identical videos. A stream blind to a pair's difference therefore scores at most one of
# each twin pair: at most 75% top-1 on any split that holds both twins, whatever it learns.
FUSION_CLASSES = ["drink from red cup", "drink from blue cup", "reach forward", "reach back"]
_CUP_BGR = {1: (30, 30, 210), 2: (210, 70, 30)}  # red, blue
_CLOTHES_HUES = tuple(range(20, 95, 5))  # yellow to cyan-green: never close to red or blue
_RIGHT_ARM = [9, 10, 11, 23, 24]  # elbow, wrist, hand, hand tip, thumb


def _reach(s, k, e, c):  # the right hand out at chest height, hold, back
    c["rh"] = lerp(c["rh"], [0.20, 0.20, -0.42], e)


def _fusion_motion(name: NTUName, seed: int) -> np.ndarray:
    """(T, 25, 3) body-frame joints of one fusion-set performance (36-52 frames)."""
    style = subject_style(seed, name.subject)
    pair = (name.action - 1) // 2  # twins share every draw (see above)
    rng = np.random.default_rng([seed, 5, name.setup, name.subject, name.replication, pair])
    s = np.linspace(0.0, 1.0, int(rng.integers(36, 53)))
    warped = s + rng.uniform(-0.08, 0.08) * np.sin(np.pi * s)
    c = action_controls(1, warped, style["cycles"])
    if name.action > 2:
        c["rh"], c["nod"] = np.tile(REST[11], (len(s), 1)), np.zeros(len(s))
        _reach(warped, 1.0, bump(warped, 0.12, 0.88, 0.2), c)
    joints = pose_from_controls(c, style["size"])
    if name.action == 4:  # mirror the arm through the shoulder's frontal plane
        sh = joints[:, 8:9, 2]
        joints[:, _RIGHT_ARM, 2] = 2 * sh - joints[:, _RIGHT_ARM, 2]
    sway = 0.015 * np.sin(2 * np.pi * (s * rng.uniform(0.5, 1.5) + rng.uniform()))
    joints[..., 0] += sway[:, None]
    return joints


def _fusion_placement(body: np.ndarray, size: tuple[int, int], rng) -> tuple[np.ndarray, float]:
    """Camera-space offset (3,) of the body and the pixels per metre of its camera."""
    w, h = size
    scale = rng.uniform(75, 100) * h / 240
    margin = rng.uniform(0.04, 0.12) * h  # feet above the bottom edge, pixels
    feet = body[:, [15, 19], 1].min()
    x = rng.uniform(-0.22, 0.22) * w / scale
    return np.array([x, (margin - h / 2) / scale - feet, rng.uniform(2.6, 3.4)]), scale


def _ortho(xyz: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """Orthographic camera: (..., 3) metres -> (..., 2) pixels; depth does not move a point."""
    return np.stack([size[0] / 2 + scale * xyz[..., 0], size[1] / 2 - scale * xyz[..., 1]], -1)


def _write_fusion_sample(task: tuple) -> str:
    """Worker: one sample's .skeleton file, RGB video and (optionally) depth folder."""
    from skelact.data.synthetic.render import Look, random_colors, render_depth, render_rgb
    from skelact.data.synthetic.render import textured_background as backdrop

    name, seed, dirs, size, depth_size = task
    twin = (name.action - 1) // 2
    rng = np.random.default_rng(
        [seed, 6, name.setup, name.camera, name.subject, name.replication, twin]
    )
    body = _fusion_motion(name, seed)
    pos, scale = _fusion_placement(body, size, rng)
    clean = body + pos  # camera space, metres
    xyz, state = add_sensor_noise(clean, rng)
    k = np.divide(depth_size, size)  # depth pixels per colour pixel, (x, y)
    rows = file_rows(xyz, (1.0, 0.0), state)
    rows[..., 5:7] = _ortho(xyz, scale, size)
    rows[..., 3:5] = rows[..., 5:7] * k
    body_id = 72057594037927936 + int(rng.integers(1000, 20000))
    text = skeleton_text(len(rows), [(body_id, 0, rows)], rng)
    (dirs["skeletons"] / f"{name}.skeleton").write_bytes(text.encode("ascii"))
    clothes = random_colors(np.random.default_rng([seed, 7, name.subject]), _CLOTHES_HUES)
    look = Look(colors=clothes, obj_size=(0.25, 0.3))  # a large cup: a small one is lost in
    # the global pooling of a random frozen ResNet (measured: A/B RGB probe 0.5 -> 0.94)
    if name.action in _CUP_BGR:
        look.obj_joint = 11
        look.obj_color = tuple(int(np.clip(v + rng.integers(-25, 26), 0, 255))
                               for v in _CUP_BGR[name.action])  # fmt: skip
    pix = _ortho(clean, scale, size)
    render_rgb(dirs["rgb"] / f"{name}_rgb.avi", pix, backdrop(size, rng, 0.25), look, rng=rng)
    if "depth" in dirs:
        render_depth(dirs["depth"] / str(name), pix * k, clean[..., 2] * 1000, depth_size, look)
    return str(name)


def write_fusion_set(
    out_dir: str | os.PathLike,
    seed: int = 0,
    subjects: Sequence[int] = (1, 2, 3, 4, 5, 6, 7, 8),
    cameras: Sequence[int] = (1, 2, 3),
    replications: Sequence[int] = (1, 2),
    size: tuple[int, int] = (256, 192),
    depth: bool = True,
    depth_size: tuple[int, int] = (256, 192),
    workers: int = 1,
) -> dict[str, Path]:
    """Write the 4-class fusion set (see FUSION_CLASSES, actions A001-A004) in NTU's layout.

    out_dir/nturgb+d_skeletons/SsssCcccPpppRrrrAaaa.skeleton, out_dir/nturgb+d_rgb/<name>
    _rgb.avi (MJPG, size = (width, height)) and, with depth, out_dir/nturgb+d_depth_masked/
    <name>/MDepth-%08d.png (16-bit mm, depth_size). Cameras differ in placement, scale and
    background, not angle: every camera faces the performer. Same seed, same files.
    Returns the folders {"skeletons", "rgb"[, "depth"]}.
    """
    from multiprocessing import Pool

    from tqdm import tqdm

    out = Path(out_dir)
    dirs = {"skeletons": out / "nturgb+d_skeletons", "rgb": out / "nturgb+d_rgb"}
    if depth:
        dirs["depth"] = out / "nturgb+d_depth_masked"
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    tasks = [
        (NTUName(1, cam, sub, rep, action), seed, dirs, tuple(size), tuple(depth_size))
        for sub in subjects for rep in replications for action in (1, 2, 3, 4) for cam in cameras
    ]  # fmt: skip
    bar = {"total": len(tasks), "desc": "render fusion set", "unit": "sample"}
    if workers <= 1:
        list(tqdm(map(_write_fusion_sample, tasks), **bar))
    else:
        with Pool(workers) as pool:
            list(tqdm(pool.imap_unordered(_write_fusion_sample, tasks), **bar))
    return dirs
