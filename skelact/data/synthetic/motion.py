"""Body motions of the synthetic actions: per-frame controls for each action and the pose they
give, in the performer's body frame (metres, y up, the performer's right = +x, facing -z)."""

from __future__ import annotations

import numpy as np

# Rest pose in the body frame (metres, y up, the performer's right = +x, facing -z), origin at
# the spine base; Kinect v2 joint order.
REST = np.array([
    [0, 0, 0], [0, .27, .01], [0, .56, 0], [0, .70, -.01],                     # spine, head
    [-.17, .49, .02], [-.20, .21, .04], [-.21, -.04, .02], [-.21, -.11, .01],  # left arm
    [.17, .49, .02], [.20, .21, .04], [.21, -.04, .02], [.21, -.11, .01],      # right arm
    [-.08, -.02, 0], [-.09, -.44, -.01], [-.09, -.83, .03], [-.09, -.88, -.08],  # left leg
    [.08, -.02, 0], [.09, -.44, -.01], [.09, -.83, .03], [.09, -.88, -.08],    # right leg
    [0, .50, .01], [-.21, -.18, 0], [-.18, -.11, -.03], [.21, -.18, 0], [.18, -.11, -.03],
])  # fmt: skip
_UPPER = [1, 2, 3, 4, 8, 20]  # joints that bend with the torso (arms are rebuilt from 4 and 8)
_MOUTH = np.array([0.0, 0.63, -0.10])


def _ease(s: np.ndarray, a: float, b: float) -> np.ndarray:
    """0 before a, 1 after b, a smooth step in between."""
    x = np.clip((s - a) / max(b - a, 1e-6), 0, 1)
    return x * x * (3 - 2 * x)


def bump(s: np.ndarray, a: float, b: float, ramp: float) -> np.ndarray:
    return _ease(s, a, a + ramp) * (1 - _ease(s, b - ramp, b))


def lerp(p: np.ndarray, q: np.ndarray, w: np.ndarray) -> np.ndarray:
    return p + (np.asarray(q) - p) * w[:, None]


# One function per action: (phase s (T,), rhythm k, envelope e (T,), controls) -> None, editing
# the controls: hand targets "rh"/"lh" (T, 3) in the torso frame (metres, before scaling),
# "bend" (forward, rad), "nod" (head down, rad), "crouch"/"back" (pelvis shift, m) (T,).
def _drink(s, k, e, c):  # a hand to the mouth, hold, back; the head tips back a little
    c["rh"] = lerp(c["rh"], _MOUTH + [0.04, -0.02, -0.02], e)
    c["nod"] = -0.25 * bump(s, 0.35, 0.7, 0.1)


def _eat(s, k, e, c):  # the left hand holds a plate, the right goes plate -> mouth
    bites = 0.5 - 0.5 * np.cos(2 * np.pi * 0.75 * k * s)
    c["lh"] = lerp(c["lh"], [-0.12, 0.18, -0.30], e)
    c["rh"] = lerp(c["rh"], lerp(np.tile([0.05, 0.18, -0.32], (len(s), 1)), _MOUTH, bites), e)


def _brush_teeth(s, k, e, c):  # fast small side-to-side strokes at the mouth
    stroke = np.zeros((len(s), 3))
    stroke[:, 0] = 0.035 * np.sin(6 * np.pi * k * s)
    c["rh"] = lerp(c["rh"], _MOUTH + [0.05, -0.01, -0.03], e) + e[:, None] * stroke


def _brush_hair(s, k, e, c):  # elbow up, strokes from the forehead to the back of the head
    wave = np.sin(2 * np.pi * k * s)
    target = np.stack([np.full(len(s), 0.12), 0.80 + 0.02 * wave, 0.06 * wave], 1)
    c["rh"], c["hint_r"] = lerp(c["rh"], target, e), np.array([1.0, 0.6, 0.2])


def _drop(s, k, e, c):  # hold something in front, let go at mid-clip, look down
    hold = _ease(s, 0.05, 0.25) * (1 - _ease(s, 0.55, 0.65))
    c["rh"] = lerp(c["rh"], [0.10, 0.30, -0.32], hold)
    c["lh"] = lerp(c["lh"], [-0.10, 0.30, -0.32], hold)
    c["nod"] = 0.35 * _ease(s, 0.55, 0.75)


def _pickup(s, k, e, c):  # bend and crouch, the right hand down to the floor, stand up
    c["bend"], c["crouch"] = 1.1 * e, 0.35 * e
    c["rh"] = lerp(c["rh"], [0.15, 0.12, -0.55], e)


def _throw(s, k, e, c):  # wind up behind the head, fast release forward
    up = _ease(s, 0.15, 0.4) * (1 - _ease(s, 0.5, 0.56))
    out = _ease(s, 0.5, 0.56) * (1 - _ease(s, 0.65, 0.9))
    c["rh"] = lerp(lerp(c["rh"], [0.22, 0.78, 0.18], up), [0.18, 0.55, -0.55], out)
    c["bend"] = 0.2 * out


def _sit(s, k, e, c, down=None):  # the pelvis drops and moves back, hands to the thighs
    down = _ease(s, 0.2, 0.7) if down is None else down
    c["crouch"], c["back"] = 0.42 * down, 0.25 * down
    c["bend"] = 0.5 * bump(s, 0.15, 0.85, 0.3)
    c["rh"] = lerp(c["rh"], [0.16, 0.0, -0.30], down)
    c["lh"] = lerp(c["lh"], [-0.16, 0.0, -0.30], down)


def _stand(s, k, e, c):  # sitting down, reversed
    _sit(s, k, e, c, down=1 - _ease(s, 0.3, 0.8))


def _clap(s, k, e, c):  # hands meet in front of the chest a few times
    gap = 0.02 + 0.13 * (0.5 + 0.5 * np.cos(2 * np.pi * 1.3 * k * s))
    ones = np.ones(len(s))
    c["rh"] = lerp(c["rh"], np.stack([gap, 0.30 * ones, -0.30 * ones], 1), e)
    c["lh"] = lerp(c["lh"], np.stack([-gap, 0.30 * ones, -0.30 * ones], 1), e)


def _read(s, k, e, c):  # both hands hold a book, head down, one page turn
    turn = bump(s, 0.45, 0.65, 0.08)
    c["lh"] = lerp(c["lh"], [-0.12, 0.22, -0.30], e)
    c["rh"] = lerp(lerp(c["rh"], [0.12, 0.22, -0.30], e), [-0.08, 0.24, -0.32], turn)
    c["nod"] = 0.4 * e


def _write(s, k, e, c):  # the left hand holds the paper, the right scribbles small circles
    a = 6 * np.pi * k * s
    circles = np.stack(
        [0.05 + 0.025 * np.cos(a), np.full(len(s), 0.05), -0.33 + 0.02 * np.sin(a)], 1
    )
    c["lh"] = lerp(c["lh"], [-0.12, 0.05, -0.33], e)
    c["rh"], c["nod"], c["bend"] = lerp(c["rh"], circles, e), 0.45 * e, 0.2 * e


ACTIONS = {1: _drink, 2: _eat, 3: _brush_teeth, 4: _brush_hair, 5: _drop, 6: _pickup,
            7: _throw, 8: _sit, 9: _stand, 10: _clap, 11: _read, 12: _write}  # fmt: skip


def action_controls(action: int, s: np.ndarray, cycles: float) -> dict[str, np.ndarray]:
    """Per-frame controls of one action at phases s (T,) in [0, 1] (see ACTIONS)."""
    T = len(s)
    zero = np.zeros(T)
    c = {"rh": np.tile(REST[11], (T, 1)), "lh": np.tile(REST[7], (T, 1)), "bend": zero,
         "nod": zero, "crouch": zero, "back": zero}  # fmt: skip
    ACTIONS[action](s, cycles, bump(s, 0.12, 0.88, 0.2), c)
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


def rot_x(angle: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotations about x; positive angles tip +y towards -z (a forward bow)."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(c), np.zeros_like(c)
    return np.stack(
        [np.stack([o, z, z], -1), np.stack([z, c, s], -1), np.stack([z, -s, c], -1)], -2
    )


def pose_from_controls(c: dict[str, np.ndarray], size: np.ndarray) -> np.ndarray:
    """(T, 25, 3) body-frame joints from the controls; ankles stay on the floor."""
    T = len(c["bend"])
    joints = np.tile(REST * size, (T, 1, 1))
    pelvis = np.stack([np.zeros(T), -c["crouch"], c["back"]], 1)
    torso = rot_x(c["bend"])
    joints[:, _UPPER] = np.einsum("tij,tvj->tvi", torso, joints[:, _UPPER]) + pelvis[:, None]
    head = np.einsum("tij,j->ti", rot_x(c["nod"]), (REST[3] - REST[2]) * size)
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
        joints[:, hip] = REST[hip] * size + pelvis
        joints[:, knee], _ = _two_link(joints[:, hip], joints[:, ankle], 0.42 * size[1],
                                       0.40 * size[1], np.array([0.0, 0.0, -1.0]))  # fmt: skip
    return joints


def subject_style(seed: int, subject: int) -> dict:
    """Body size (x, y, z scale), speed, rhythm and posture of one performer."""
    rng = np.random.default_rng([seed, 1, subject])
    h = rng.uniform(0.88, 1.12)
    size = np.array([h * rng.uniform(0.92, 1.08), h, h * rng.uniform(0.92, 1.08)])
    return {"size": size, "speed": rng.uniform(0.8, 1.25), "cycles": rng.uniform(2.2, 3.6),
            "lean": rng.normal(0.0, 0.05)}  # fmt: skip
