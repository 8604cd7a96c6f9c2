"""Per-joint input channels made from the coordinates: joints, velocities, bones, their
motion, the body's position and the partner's relative position (`MotionFeatures`).

Like the transforms, `MotionFeatures` is a dict -> dict callable on "keypoint".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skelact.data.prep.sampling import present
from skelact.layouts import Layout

Results = dict


class MotionFeatures:
    """Per-joint input channels: C -> `channels(kinds, C, V)`.

    kinds from "joint", "velocity" (frame difference; zero at the last frame and across
    frames where the body is absent), "bone" (joint minus its parent; layouts without bones use
    the offset from the joints' mean), "bone_velocity" (the bones' frame difference, zero as
    velocity is), "root" (the body's centre joints, the same for every joint: where the body
    is, without its posture), "partner" (the other body's joints relative to this body's
    centre, zero without a partner: the two-person geometry), each C channels, and two of V
    channels, which no rotation of the view changes: "distance", the joint's distance to every
    joint of its body, and "partner_distance", to every joint of the other body (zero without
    a partner); and "height", V channels that no turn about the vertical (y) axis changes: the
    joint's height above every joint of its body (y difference), which keeps the up and down
    that distances lose (a hand raised above the head or held at the mouth). Needs "keypoint"
    (..., M, T, V, C).
    """

    KINDS = (
        "joint", "velocity", "bone", "bone_velocity", "distance", "root", "partner",
        "partner_distance", "height",
    )  # fmt: skip
    PER_JOINT = ("distance", "partner_distance", "height")  # V channels each; the others C

    @staticmethod
    def channels(kinds: Sequence[str], c: int, v: int) -> int:
        return sum(v if k in MotionFeatures.PER_JOINT else c for k in kinds)

    def __init__(self, layout: Layout, kinds: Sequence[str] = ("joint",)):
        unknown = set(kinds) - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown feature kinds {sorted(unknown)}")
        self.kinds = list(kinds)
        self.parents = np.array([p if p >= 0 else v for v, p in enumerate(layout.parents)])
        self.has_bones = any(p >= 0 for p in layout.parents)
        self.center = list(layout.center) or list(range(layout.num_joints))

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        feats, bones = [], None
        for kind in self.kinds:
            if kind == "joint":
                feats.append(kp)
            elif kind == "velocity":
                feats.append(velocity(kp))
            elif kind == "root":
                root = kp[..., self.center, :].mean(-2, keepdims=True)
                feats.append(np.broadcast_to(root, kp.shape))  # absent bodies stay zero
            elif kind == "distance":
                feats.append(pairwise_distance(kp, kp))
            elif kind == "partner":
                feats.append(self.partner(kp))
            elif kind == "height":
                feats.append(kp[..., :, None, 1] - kp[..., None, :, 1])
            elif kind == "partner_distance":
                feats.append(partner_distance(kp))
            else:  # bone or bone_velocity: the bones made once
                bones = self.bones(kp) if bones is None else bones
                feats.append(velocity(bones) if kind == "bone_velocity" else bones)
        results["keypoint"] = np.concatenate(feats, -1).astype(np.float32, copy=False)
        return results

    def bones(self, kp: np.ndarray) -> np.ndarray:
        if self.has_bones:
            return kp - kp[..., self.parents, :]
        return kp - kp.mean(-2, keepdims=True)

    def partner(self, kp: np.ndarray) -> np.ndarray:
        """(..., M, T, V, C): body m's partner (the next body, cyclically) relative to m's
        centre in each frame; zero where either body is absent or there is one body."""
        if kp.shape[-4] < 2:
            return np.zeros_like(kp)
        here = present(kp)[..., None, None]  # (..., M, T, 1, 1)
        centre = kp[..., self.center, :].mean(-2, keepdims=True)  # (..., M, T, 1, C)
        other = np.roll(kp, -1, axis=-4)
        both = here & np.roll(here, -1, axis=-4)
        return np.where(both, other - centre, 0.0).astype(kp.dtype, copy=False)


# kinds whose V channels at joint i, column j repeat those at joint j, column i: the distance
# the same (+1), the height negated (-1); their diagonals (i == j) are zero
PAIRED = {"distance": 1.0, "height": -1.0}


def paired_columns(
    kinds: Sequence[str], width: int, v: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A stream's frame vector (V joints x `width` = `channels(kinds, c, v)` channels, flattened
    joint by joint) without its repeats: "distance" and "height" hold every pair of joints
    twice, (i, j) and (j, i), and a zero diagonal. Returns (keep, twin, sign), each of the U kept
    columns: a linear map W of the whole vector equals the map of x[keep] by W[:, keep] + sign *
    W[:, twin] (sign 0 where the column has no twin), with about half the products for the
    distance stream. None when no kind is paired."""
    if not any(k in PAIRED for k in kinds):
        return None
    per_c = sum(k not in MotionFeatures.PER_JOINT for k in kinds)  # kinds of C channels each
    c = (width - (len(kinds) - per_c) * v) // per_c if per_c else 0
    kept = []  # (column, its twin, sign)
    for i in range(v):
        off = 0
        for kind in kinds:
            n = v if kind in MotionFeatures.PER_JOINT else c
            for j in range(n):
                col = i * width + off + j
                if kind not in PAIRED:
                    kept.append((col, col, 0.0))
                elif j > i:
                    kept.append((col, j * width + off + i, PAIRED[kind]))
            off += n
    keep, twin, sign = zip(*kept, strict=True)
    return np.array(keep), np.array(twin), np.array(sign, np.float32)


def pairwise_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., V, C) x (..., V, C) -> (..., V, V): the distance from each joint of a to each of b.

    The squares are summed one coordinate at a time, in the order `np.linalg.norm` sums them
    (so the result is the same to the bit), without its (..., V, V, C) temporaries: about 10x
    faster at NTU shape (2 bodies, 32 frames, 25 joints)."""
    squares = None
    for c in range(a.shape[-1]):
        diff = a[..., :, None, c] - b[..., None, :, c]
        squares = diff * diff if squares is None else squares + diff * diff
    return np.sqrt(squares)


def partner_distance(kp: np.ndarray) -> np.ndarray:
    """(..., M, T, V, C) -> (..., M, T, V, V): the distance from each joint of body m to each
    joint of its partner (the next body, cyclically) in the same frame; zero where either body
    is absent or there is one body."""
    if kp.shape[-4] < 2:
        return np.zeros(kp.shape[:-1] + kp.shape[-2:-1], kp.dtype)
    dist = pairwise_distance(kp, np.roll(kp, -1, axis=-4))
    here = present(kp)  # (..., M, T)
    both = here & np.roll(here, -1, axis=-2)
    return np.where(both[..., None, None], dist, 0.0).astype(kp.dtype)


def velocity(kp: np.ndarray) -> np.ndarray:
    """Frame differences (..., T, V, C), zero at the last frame and wherever the body is absent
    in either frame: a body that vanishes or reappears does not move by minus its position."""
    vel = np.diff(kp, axis=-3, append=kp[..., -1:, :, :])
    here = present(kp)  # (..., T)
    both = here[..., 1:] & here[..., :-1]
    vel[..., :-1, :, :] *= both[..., None, None]
    return vel
