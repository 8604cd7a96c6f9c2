"""A small synthetic NTU RGB+D dataset, written in the real `.skeleton` text format.

Each action id 1..12 gets a motion plausible for its official NTU name (drink water: a hand
to the mouth and back; clapping: hands meeting in front of the chest; sitting down: the pelvis
drops and moves back...). A performance (setup, subject, replication, action) is generated once
and seen by every camera, as in NTU: the cameras stand at -45 (C002), 0 (C001) and +45 (C003)
degrees, and the performer faces camera 2 in R001 and camera 3 in R002, so camera 1 sees
45-degree views and cameras 2 and 3 see front and side views. Subjects differ in size, speed
and style; files carry joint jitter, glitches, occasional short noise bodies and empty leading
frames, and pixel positions from a pinhole model of Kinect v2's 512x424 depth and 1920x1080
colour cameras.

`write_fusion_set` adds rendered RGB videos and depth maps for a 4-class set built to prove
late fusion: one class pair only the pictures can tell apart, the other only the skeleton.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skelact.data.ntu import NTUName

# Rest pose in the body frame (metres, y up, the performer's right = +x, facing -z), origin at
# the spine base; Kinect v2 joint order.
_REST = np.array([
    [0, 0, 0], [0, .27, .01], [0, .56, 0], [0, .70, -.01],                     # spine, head
    [-.17, .49, .02], [-.20, .21, .04], [-.21, -.04, .02], [-.21, -.11, .01],  # left arm
    [.17, .49, .02], [.20, .21, .04], [.21, -.04, .02], [.21, -.11, .01],      # right arm
    [-.08, -.02, 0], [-.09, -.44, -.01], [-.09, -.83, .03], [-.09, -.88, -.08],  # left leg
    [.08, -.02, 0], [.09, -.44, -.01], [.09, -.83, .03], [.09, -.88, -.08],    # right leg
    [0, .50, .01], [-.21, -.18, 0], [-.18, -.11, -.03], [.21, -.18, 0], [.18, -.11, -.03],
])  # fmt: skip
_UPPER = [1, 2, 3, 4, 8, 20]  # joints that bend with the torso (arms are rebuilt from 4 and 8)
_LEAVES = [3, 15, 19, 21, 22, 23, 24]  # Kinect writes no orientation for these
_MOUTH = np.array([0.0, 0.63, -0.10])
_BASE_FRAMES = {1: 90, 2: 100, 3: 100, 4: 90, 5: 60, 6: 80, 7: 60, 8: 75, 9: 70, 10: 70,
                11: 110, 12: 110}  # fmt: skip
_CAMERA_AZIMUTH = {1: 0.0, 2: -45.0, 3: 45.0}
_FACING = {1: -45.0, 2: 45.0}  # replication -> azimuth the performer faces (camera 2, camera 3)
_DEPTH_CAM = (365.0, 256.0, 212.0)  # focal length, cx, cy in depth pixels (512 x 424)
_COLOR_CAM = (1060.0, 960.0, 540.0, 0.04)  # ... in colour pixels (1920 x 1080), x baseline (m)
_ROW = " ".join(["%.7G"] * 11 + ["%d"])
_BLOCK = "\r\n".join([_ROW] * 25)


def _ease(s: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 before a, 1 after b, a smooth step in between."""
    x = np.clip((s - a) / max(b - a, 1e-6), 0, 1)
    return x * x * (3 - 2 * x)


def _bump(s: np.ndarray, a: float, b: float, ramp: float) -> np.ndarray:
    return _ease(s, a, a + ramp) * (1 - _ease(s, b - ramp, b))


def _lerp(p: np.ndarray, q: np.ndarray, w: np.ndarray) -> np.ndarray:
    return p + (np.asarray(q) - p) * w[:, None]


# One function per action: (phase s (T,), rhythm k, envelope e (T,), controls) -> None, editing
# the controls: hand targets "rh"/"lh" (T, 3) in the torso frame (metres, before scaling),
# "bend" (forward, rad), "nod" (head down, rad), "crouch"/"back" (pelvis shift, m) (T,).
def _drink(s, k, e, c):  # a hand to the mouth, hold, back; the head tips back a little
    c["rh"] = _lerp(c["rh"], _MOUTH + [0.04, -0.02, -0.02], e)
    c["nod"] = -0.25 * _bump(s, 0.35, 0.7, 0.1)


def _eat(s, k, e, c):  # the left hand holds a plate, the right goes plate -> mouth
    bites = 0.5 - 0.5 * np.cos(2 * np.pi * 0.75 * k * s)
    c["lh"] = _lerp(c["lh"], [-0.12, 0.18, -0.30], e)
    c["rh"] = _lerp(c["rh"], _lerp(np.tile([0.05, 0.18, -0.32], (len(s), 1)), _MOUTH, bites), e)


def _brush_teeth(s, k, e, c):  # fast small side-to-side strokes at the mouth
    stroke = np.zeros((len(s), 3))
    stroke[:, 0] = 0.035 * np.sin(6 * np.pi * k * s)
    c["rh"] = _lerp(c["rh"], _MOUTH + [0.05, -0.01, -0.03], e) + e[:, None] * stroke


def _brush_hair(s, k, e, c):  # elbow up, strokes from the forehead to the back of the head
    wave = np.sin(2 * np.pi * k * s)
    target = np.stack([np.full(len(s), 0.12), 0.80 + 0.02 * wave, 0.06 * wave], 1)
    c["rh"], c["hint_r"] = _lerp(c["rh"], target, e), np.array([1.0, 0.6, 0.2])


def _drop(s, k, e, c):  # hold something in front, let go at mid-clip, look down
    hold = _ease(s, 0.05, 0.25) * (1 - _ease(s, 0.55, 0.65))
    c["rh"] = _lerp(c["rh"], [0.10, 0.30, -0.32], hold)
    c["lh"] = _lerp(c["lh"], [-0.10, 0.30, -0.32], hold)
    c["nod"] = 0.35 * _ease(s, 0.55, 0.75)


def _pickup(s, k, e, c):  # bend and crouch, the right hand down to the floor, stand up
    c["bend"], c["crouch"] = 1.1 * e, 0.35 * e
    c["rh"] = _lerp(c["rh"], [0.15, 0.12, -0.55], e)


def _throw(s, k, e, c):  # wind up behind the head, fast release forward
    up = _ease(s, 0.15, 0.4) * (1 - _ease(s, 0.5, 0.56))
    out = _ease(s, 0.5, 0.56) * (1 - _ease(s, 0.65, 0.9))
    c["rh"] = _lerp(_lerp(c["rh"], [0.22, 0.78, 0.18], up), [0.18, 0.55, -0.55], out)
    c["bend"] = 0.2 * out


def _sit(s, k, e, c, down=None):  # the pelvis drops and moves back, hands to the thighs
    down = _ease(s, 0.2, 0.7) if down is None else down
    c["crouch"], c["back"] = 0.42 * down, 0.25 * down
    c["bend"] = 0.5 * _bump(s, 0.15, 0.85, 0.3)
    c["rh"] = _lerp(c["rh"], [0.16, 0.0, -0.30], down)
    c["lh"] = _lerp(c["lh"], [-0.16, 0.0, -0.30], down)


def _stand(s, k, e, c):  # sitting down, reversed
    _sit(s, k, e, c, down=1 - _ease(s, 0.3, 0.8))


def _clap(s, k, e, c):  # hands meet in front of the chest a few times
    gap = 0.02 + 0.13 * (0.5 + 0.5 * np.cos(2 * np.pi * 1.3 * k * s))
    ones = np.ones(len(s))
    c["rh"] = _lerp(c["rh"], np.stack([gap, 0.30 * ones, -0.30 * ones], 1), e)
    c["lh"] = _lerp(c["lh"], np.stack([-gap, 0.30 * ones, -0.30 * ones], 1), e)


def _read(s, k, e, c):  # both hands hold a book, head down, one page turn
    turn = _bump(s, 0.45, 0.65, 0.08)
    c["lh"] = _lerp(c["lh"], [-0.12, 0.22, -0.30], e)
    c["rh"] = _lerp(_lerp(c["rh"], [0.12, 0.22, -0.30], e), [-0.08, 0.24, -0.32], turn)
    c["nod"] = 0.4 * e


def _write(s, k, e, c):  # the left hand holds the paper, the right scribbles small circles
    a = 6 * np.pi * k * s
    circles = np.stack(
        [0.05 + 0.025 * np.cos(a), np.full(len(s), 0.05), -0.33 + 0.02 * np.sin(a)], 1
    )
    c["lh"] = _lerp(c["lh"], [-0.12, 0.05, -0.33], e)
    c["rh"], c["nod"], c["bend"] = _lerp(c["rh"], circles, e), 0.45 * e, 0.2 * e


_ACTIONS = {1: _drink, 2: _eat, 3: _brush_teeth, 4: _brush_hair, 5: _drop, 6: _pickup,
            7: _throw, 8: _sit, 9: _stand, 10: _clap, 11: _read, 12: _write}  # fmt: skip


def _motion(action: int, s: np.ndarray, cycles: float) -> dict[str, np.ndarray]:
    """Per-frame controls of one action at phases s (T,) in [0, 1] (see _ACTIONS)."""
    T = len(s)
    zero = np.zeros(T)
    c = {"rh": np.tile(_REST[11], (T, 1)), "lh": np.tile(_REST[7], (T, 1)), "bend": zero,
         "nod": zero, "crouch": zero, "back": zero}  # fmt: skip
    _ACTIONS[action](s, cycles, _bump(s, 0.12, 0.88, 0.2), c)
    return c


def _two_link(root, target, a: float, b: float, hint) -> tuple[np.ndarray, np.ndarray]:
    """Elbow/knee and end positions (T, 3) of a 2-bone limb reaching for `target`."""
    d = target - root
    dist = np.linalg.norm(d, axis=1, keepdims=True)
    u = d / np.maximum(dist, 1e-6)
    dist = np.clip(dist, abs(a - b) + 1e-3, a + b - 1e-3)
    cos_a = (a * a + dist**2 - b * b) / (2 * a * dist)
    w = hint - np.sum(hint * u, axis=1, keepdims=True) * u
    w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-6)
    mid = root + a * (cos_a * u + np.sqrt(1 - cos_a**2) * w)
    return mid, root + u * dist


def _rot_x(angle: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations about x; positive angles tip +y towards -z (a forward bow)."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack(
        [np.stack([o, z, z], -1), np.stack([z, c, s], -1), np.stack([z, -s, c], -1)], -2
    )


def _pose(c: dict[str, np.ndarray], size: np.ndarray) -> np.ndarray:
    """(T, 25, 3) body-frame joints from the controls; ankles stay on the floor."""
    T = len(c["bend"])
    joints = np.tile(_REST * size, (T, 1, 1))
    pelvis = np.stack([np.zeros(T), -c["crouch"], c["back"]], 1)
    torso = _rot_x(c["bend"])
    joints[:, _UPPER] = np.einsum("tij,tvj->tvi", torso, joints[:, _UPPER]) + pelvis[:, None]
    head = np.einsum("tij,j->ti", _rot_x(c["nod"]), (_REST[3] - _REST[2]) * size)
    joints[:, 3] = joints[:, 2] + head
    joints[:, 0] = pelvis
    up, fore = 0.30 * size[1], 0.26 * size[1]
    for side, (sh, el, wr, ha, tip, th) in (
        ("r", (8, 9, 10, 11, 23, 24)),
        ("l", (4, 5, 6, 7, 21, 22)),
    ):
        target = np.einsum("tij,tj->ti", torso, c[side + "h"] * size) + pelvis
        sign = 1.0 if side == "r" else -1.0
        hint = np.broadcast_to(c.get("hint_" + side, np.array([0.5 * sign, -1.0, 0.3])), (T, 3))
        joints[:, el], joints[:, wr] = _two_link(joints[:, sh], target, up, fore, hint)
        fdir = (joints[:, wr] - joints[:, el]) / fore
        joints[:, ha] = joints[:, wr] + 0.07 * fdir
        joints[:, tip] = joints[:, ha] + 0.07 * fdir
        joints[:, th] = joints[:, ha] + 0.03 * fdir + np.array([-0.03 * sign, 0, -0.03])
    for hip, knee, ankle in ((12, 13, 14), (16, 17, 18)):
        joints[:, hip] = _REST[hip] * size + pelvis
        joints[:, knee], _ = _two_link(joints[:, hip], joints[:, ankle], 0.42 * size[1],
                                       0.40 * size[1], np.array([0.0, 0.0, -1.0]))  # fmt: skip
    return joints


def _subject_style(seed: int, subject: int) -> dict:
    """Body size (x, y, z scale), speed, rhythm and posture of one performer."""
    rng = np.random.default_rng([seed, 1, subject])
    h = rng.uniform(0.88, 1.12)
    size = np.array([h * rng.uniform(0.92, 1.08), h, h * rng.uniform(0.92, 1.08)])
    return {"size": size, "speed": rng.uniform(0.8, 1.25), "cycles": rng.uniform(2.2, 3.6),
            "lean": rng.normal(0.0, 0.05)}  # fmt: skip


def _performance(seed: int, name: NTUName) -> np.ndarray:
    """(T, 25, 3) body-frame joints of one performance, shared by all cameras."""
    style = _subject_style(seed, name.subject)
    rng = np.random.default_rng([seed, 2, name.setup, name.subject, name.replication, name.action])
    frames = round(_BASE_FRAMES[name.action] * style["speed"] * rng.uniform(0.9, 1.1))
    s = np.linspace(0.0, 1.0, int(np.clip(frames, 40, 120)))
    warped = s + rng.uniform(-0.05, 0.05) * np.sin(np.pi * s)  # timing differs per take
    c = _motion(name.action, warped, style["cycles"] * rng.uniform(0.9, 1.1))
    c["bend"] = c["bend"] + style["lean"]
    joints = _pose(c, style["size"])
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
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ _rot_x(np.deg2rad([tilt]))[0].T
    pos = np.array([rng.normal(0, 0.15), height, dist + rng.normal(0, 0.1)])
    return joints @ rot.T + pos


def _rows(xyz: np.ndarray, yaw_q: tuple[float, float], state: np.ndarray) -> np.ndarray:
    """(T, 25, 12) file rows: x y z depthX depthY colorX colorY orientWXYZ trackingState."""
    f, cx, cy = _DEPTH_CAM
    fc, ccx, ccy, base = _COLOR_CAM
    x, y, z = xyz[..., 0], xyz[..., 1], np.maximum(xyz[..., 2], 0.3)
    quat = np.zeros((*x.shape, 4))
    quat[..., 0], quat[..., 2] = yaw_q
    quat[:, _LEAVES] = 0.0
    pix = [cx + f * x / z, cy - f * y / z, ccx + fc * (x + base) / z, ccy - fc * y / z]
    return np.concatenate([xyz, np.stack(pix, -1), quat, state[..., None]], -1)


def _noisy(xyz: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
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
    shape = _REST * rng.uniform(0.4, 0.9, 3) @ _rot_x(np.array([rng.uniform(-1.2, 1.2)]))[0].T
    pos = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-0.6, 0.4), rng.uniform(2.0, 4.0)])
    xyz = shape + pos + rng.normal(0.0, 0.03, (min(k, T - start), 25, 3))
    return start, xyz


def _skeleton_text(T: int, bodies: list[tuple[int, int, np.ndarray]], rng) -> str:
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
    xyz, state = _noisy(_to_camera(joints, name, seed, rng), rng)
    half = np.deg2rad(_FACING[1 + (name.replication - 1) % 2] - _CAMERA_AZIMUTH[name.camera]) / 2
    rows = _rows(xyz, (np.cos(half), np.sin(half)), state)
    lead = int(rng.integers(1, 6)) if rng.random() < empty_start_prob else 0
    body_id = 72057594037927936 + int(rng.integers(1000, 20000))
    bodies = [(body_id, lead, rows[lead:])]
    if rng.random() < noise_body_prob:
        start, nxyz = _noise_body(len(rows), rng)
        nrows = _rows(nxyz, (1.0, 0.0), np.ones(nxyz.shape[:2]))
        bodies.append((body_id + int(rng.integers(1, 50)), start, nrows))
    return _skeleton_text(len(rows), bodies, rng)


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
    if not 1 <= num_classes <= len(_ACTIONS):
        raise ValueError(f"num_classes must be 1..{len(_ACTIONS)}, got {num_classes}")
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
    c["rh"] = _lerp(c["rh"], [0.20, 0.20, -0.42], e)


def _fusion_motion(name: NTUName, seed: int) -> np.ndarray:
    """(T, 25, 3) body-frame joints of one fusion-set performance (36-52 frames)."""
    style = _subject_style(seed, name.subject)
    pair = (name.action - 1) // 2  # twins share every draw (see above)
    rng = np.random.default_rng([seed, 5, name.setup, name.subject, name.replication, pair])
    s = np.linspace(0.0, 1.0, int(rng.integers(36, 53)))
    warped = s + rng.uniform(-0.08, 0.08) * np.sin(np.pi * s)
    c = _motion(1, warped, style["cycles"])
    if name.action > 2:
        c["rh"], c["nod"] = np.tile(_REST[11], (len(s), 1)), np.zeros(len(s))
        _reach(warped, 1.0, _bump(warped, 0.12, 0.88, 0.2), c)
    joints = _pose(c, style["size"])
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
    from skelact.data.render import Look, random_colors, render_depth, render_rgb
    from skelact.data.render import textured_background as backdrop

    name, seed, dirs, size, depth_size = task
    twin = (name.action - 1) // 2
    rng = np.random.default_rng(
        [seed, 6, name.setup, name.camera, name.subject, name.replication, twin]
    )
    body = _fusion_motion(name, seed)
    pos, scale = _fusion_placement(body, size, rng)
    clean = body + pos  # camera space, metres
    xyz, state = _noisy(clean, rng)
    k = np.divide(depth_size, size)  # depth pixels per colour pixel, (x, y)
    rows = _rows(xyz, (1.0, 0.0), state)
    rows[..., 5:7] = _ortho(xyz, scale, size)
    rows[..., 3:5] = rows[..., 5:7] * k
    body_id = 72057594037927936 + int(rng.integers(1000, 20000))
    text = _skeleton_text(len(rows), [(body_id, 0, rows)], rng)
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
