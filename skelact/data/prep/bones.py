"""Transforms that rebuild each body from its bones, root outwards: every bone at its median
length (`MedianBones`, data.skeleton.bone_lengths=median) and random body proportions
(`RandomBones`, the augmentation data.skeleton.augment.bone_scale). dict -> dict callables on
"keypoint" (M, T, V, C), as in `skelact.data.prep.transforms`.
"""

from __future__ import annotations

import numpy as np

from skelact.data.prep.augment import check_augment_value
from skelact.data.prep.sampling import present
from skelact.layouts import Layout

Results = dict


class _BoneTree:
    """A layout's bones as a tree: each body rebuilt from its root joint outwards (parents
    before children), each joint at its parent plus its bone times a factor that a subclass's
    `new_body` chooses. Layouts without bones, 2D keypoints and absent body-frames pass
    through."""

    def __init__(self, layout: Layout):
        self.parents = np.asarray(layout.parents)
        self.order = _parents_first(self.parents)
        # a root is its own parent: its bone is zero and never used
        self.start = np.where(self.parents >= 0, self.parents, np.arange(len(self.parents)))

    def bones(self, body: np.ndarray) -> np.ndarray:
        """(T, V, 3) each joint minus its parent (zero at a root)."""
        return body - body[:, self.start]

    def rebuild(self, body: np.ndarray, factor: np.ndarray) -> np.ndarray:
        """`body` (T, V, 3) with bone v times factor[..., v] ((V,) or (T, V))."""
        bone, new = self.bones(body), body.copy()
        for v in self.order:
            new[:, v] = new[:, self.parents[v]] + factor[..., v, None] * bone[:, v]
        return new

    def __call__(self, results: Results) -> Results:
        kp = results["keypoint"]
        if kp.shape[-1] != 3 or not self.order:
            return results
        valid = present(kp)  # (M, T)
        out = kp.copy()
        for m in np.flatnonzero(valid.any(1)):
            out[m, valid[m]] = self.new_body(kp[m, valid[m]], results)
        results["keypoint"] = out
        return results


class MedianBones(_BoneTree):
    """Give every bone its median length over the body's frames, keeping its direction.

    A depth sensor's joints jitter, and with them the bone lengths, which a real body keeps;
    each joint goes to its parent plus the bone's median length along the bone's direction in
    that frame. Needs "keypoint" (M, T, V, C).
    """

    def new_body(self, body: np.ndarray, results: Results) -> np.ndarray:
        body = body.astype(np.float64)
        length = np.linalg.norm(self.bones(body), axis=-1)  # (T', V)
        median = np.median(length, axis=0)  # (V,)
        return self.rebuild(body, median / np.maximum(length, 1e-9)).astype(np.float32)


class RandomBones(_BoneTree):
    """Training augmentation: each body's bones scaled by random factors in [1-s, 1+s], one
    per bone for the whole clip (a body of other proportions), a left bone and its right twin
    alike. Needs "keypoint" (M, T, V, C) and "rng"."""

    def __init__(self, layout: Layout, s: float):
        check_augment_value("bone_scale", s)
        super().__init__(layout)
        twin = layout.mirror_index()
        own = np.arange(len(self.parents))
        self.draw = own if twin is None else np.minimum(own, twin)  # a pair uses one draw
        self.s = s

    def new_body(self, body: np.ndarray, results: Results) -> np.ndarray:
        factor = results["rng"].uniform(1 - self.s, 1 + self.s, len(self.parents))
        return self.rebuild(body, factor[self.draw])


def _parents_first(parents: np.ndarray) -> list[int]:
    """The joints that have a parent, each after its parent (roots themselves left out)."""
    order, placed = [], {int(v) for v in np.flatnonzero(parents < 0)}
    while len(placed) < len(parents):
        ready = [v for v in range(len(parents)) if v not in placed and parents[v] in placed]
        if not ready:
            raise ValueError(f"the layout's parents form a cycle: {parents.tolist()}")
        order += ready
        placed.update(ready)
    return order
