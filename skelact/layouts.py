"""Joint layouts as data: names, bone parents and the joints that define a body frame.

One home for every joint order in skelact. A layout with named joints (`ntu25`, `kinect20`,
`mediapipe33`, `openni15`) supports view alignment; `generic` works for any joint count V and
uses only statistics over all joints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """A skeleton layout.

    `parents[v]` is the joint a bone from `v` starts at (-1 for the root). `center` joints are
    averaged to give the body centre; `left_right` is a (left, right) pair of joints whose line
    is rotated onto +x by view alignment (shoulders or hips); `spine` is a (bottom, top) pair
    whose line is rotated onto +y.
    """

    name: str
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    center: tuple[int, ...] = ()
    left_right: tuple[int, int] | None = None
    hips: tuple[int, int] | None = None
    spine: tuple[int, int] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def named(self) -> bool:
        """Has the joints view alignment needs: a left/right pair and a spine (or hips)."""
        return self.left_right is not None and (self.spine is not None or self.hips is not None)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)

    def mirror_index(self) -> np.ndarray | None:
        """(V,) the joint each joint becomes in the mirror image (left <-> right by name), or
        None for a layout with no left and right joints."""
        swap = {"left": "right", "right": "left"}
        twins = ["_".join(swap.get(p, p) for p in name.split("_")) for name in self.joints]
        index = np.array([self.joints.index(t if t in self.joints else n)
                          for t, n in zip(twins, self.joints, strict=True)])  # fmt: skip
        return index if (index != np.arange(len(index))).any() else None

    def bones(self) -> list[tuple[int, int]]:
        """(child, parent) pairs of every bone."""
        return [(v, p) for v, p in enumerate(self.parents) if p >= 0]


_NTU25_JOINTS = (
    "spine_base", "spine_mid", "neck", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
    "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
)  # fmt: skip
# Kinect v2 hierarchy: hand tips and thumbs hang off the hands.
_NTU25_PARENTS = (-1, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1,
                  7, 7, 11, 11)  # fmt: skip

NTU25 = Layout(
    name="ntu25",
    joints=_NTU25_JOINTS,
    parents=_NTU25_PARENTS,
    center=(1,),  # spine mid: the body centre used by most NTU pipelines
    left_right=(4, 8),
    hips=(12, 16),
    spine=(0, 20),
)

_KINECT20_JOINTS = (
    "hip_center", "spine", "shoulder_center", "head",
    "left_shoulder", "left_elbow", "left_wrist", "left_hand",
    "right_shoulder", "right_elbow", "right_wrist", "right_hand",
    "left_hip", "left_knee", "left_ankle", "left_foot",
    "right_hip", "right_knee", "right_ankle", "right_foot",
)  # fmt: skip
_KINECT20_PARENTS = (-1, 0, 1, 2, 2, 4, 5, 6, 2, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18)

KINECT20 = Layout(
    name="kinect20",
    joints=_KINECT20_JOINTS,
    parents=_KINECT20_PARENTS,
    center=(1,),
    left_right=(4, 8),
    hips=(12, 16),
    spine=(0, 2),
)

_MEDIAPIPE33_JOINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer",
    "right_eye_inner", "right_eye", "right_eye_outer", "left_ear", "right_ear",
    "mouth_left", "mouth_right", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip
# BlazePose has no spine joints: the torso is the shoulder and hip quadrilateral, rooted at
# the left hip; the face hangs off the nose, the nose off the shoulders' left end.
_MEDIAPIPE33_PARENTS = (11, 0, 1, 2, 0, 4, 5, 3, 6, 0, 0, 23, 11, 11, 12, 13, 14,
                        15, 16, 15, 16, 15, 16, -1, 23, 23, 24, 25, 26, 27, 28, 27, 28)  # fmt: skip

MEDIAPIPE33 = Layout(
    name="mediapipe33",
    joints=_MEDIAPIPE33_JOINTS,
    parents=_MEDIAPIPE33_PARENTS,
    center=(11, 12, 23, 24),
    left_right=(11, 12),
    hips=(23, 24),
    spine=None,  # derived: mid-hips -> mid-shoulders, see spine_points()
)

# The 15-joint OpenNI/NiTE skeleton (SBU Kinect Interaction, KARD), in SBU's joint order; KARD
# files list the same joints right side first and are reordered at import.
_OPENNI15_JOINTS = (
    "head", "neck", "torso",
    "left_shoulder", "left_elbow", "left_hand",
    "right_shoulder", "right_elbow", "right_hand",
    "left_hip", "left_knee", "left_foot",
    "right_hip", "right_knee", "right_foot",
)  # fmt: skip
_OPENNI15_PARENTS = (1, 2, -1, 1, 3, 4, 1, 6, 7, 2, 9, 10, 2, 12, 13)

OPENNI15 = Layout(
    name="openni15",
    joints=_OPENNI15_JOINTS,
    parents=_OPENNI15_PARENTS,
    center=(2,),  # torso
    left_right=(3, 6),
    hips=(9, 12),
    spine=(2, 1),  # torso -> neck
)

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (NTU25, KINECT20, MEDIAPIPE33, OPENNI15)}
# The layouts MediaPipe conversion produces: BlazePose's own, or mapped onto Kinect v2's.
POSE_LAYOUTS = ("mediapipe33", "ntu25")


_LEG_WORDS = ("hip", "knee", "ankle", "foot", "heel")
_ARM_WORDS = ("shoulder", "elbow", "wrist", "hand", "thumb", "pinky", "index")


def body_parts(layout: Layout) -> dict[str, tuple[int, ...]]:
    """The joints of each body part, by joint name: the two arms (shoulder to fingers), the two
    legs (hip to foot) and the trunk with the head (every other joint: spine, neck, face)."""
    if not layout.named:
        raise ValueError(f"layout {layout.name!r} has no named joints to group into body parts")
    parts: dict[str, list[int]] = {
        "trunk": [], "left_arm": [], "right_arm": [], "left_leg": [], "right_leg": []
    }  # fmt: skip
    for v, joint in enumerate(layout.joints):
        words = joint.split("_")
        side = "left" if "left" in words else "right" if "right" in words else None
        if side and any(w in words for w in _LEG_WORDS):
            parts[f"{side}_leg"].append(v)
        elif side and any(w in words for w in _ARM_WORDS):
            parts[f"{side}_arm"].append(v)
        else:
            parts["trunk"].append(v)
    return {k: tuple(v) for k, v in parts.items()}


def get_layout(name: str, num_joints: int | None = None) -> Layout:
    """Look a layout up by name; `generic` builds a nameless layout for `num_joints` joints."""
    if name == "generic":
        if num_joints is None:
            raise ValueError("layout 'generic' needs the joint count")
        return Layout(
            name="generic",
            joints=tuple(f"j{v}" for v in range(num_joints)),
            parents=(-1,) * num_joints,
            center=tuple(range(num_joints)),
        )
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; known: {sorted(LAYOUTS) + ['generic']}")
    layout = LAYOUTS[name]
    if num_joints is not None and num_joints != layout.num_joints:
        raise ValueError(f"layout {name!r} has {layout.num_joints} joints, data has {num_joints}")
    return layout


# Names of one joint in different layouts (Kinect v2 / NTU, Kinect v1, OpenNI), for
# `joint_map`, the nearest first. OpenNI's neck sits at the shoulders, Kinect v1's shoulder
# centre; NTU's own neck is a joint above its spine_shoulder.
JOINT_ALIASES = (
    ("spine_base", "hip_center"),
    ("spine_mid", "spine", "torso"),
    ("spine_shoulder", "shoulder_center"),
    ("neck", "shoulder_center", "spine_shoulder"),
)


def joint_map(src: Layout, dst: Layout) -> np.ndarray:
    """(dst.num_joints,) for each joint of `dst`, the joint of `src` it is taken from: the
    same name, else an alias (`JOINT_ALIASES`) that no other joint has taken (Kinect v1's
    shoulder centre is NTU's spine_shoulder, not also its neck). Raises ValueError naming
    the joints `src` cannot give (OpenNI's 15 have no wrists for Kinect v1)."""
    index = {name: src.joints.index(name) for name in dst.joints if name in src.joints}
    used = set(index.values())
    for group in JOINT_ALIASES:
        for name in group:
            if name not in dst.joints or name in index:
                continue
            free = [src.joints.index(a) for a in group if a in src.joints]
            free = [v for v in free if v not in used]
            if free:
                index[name] = free[0]
                used.add(free[0])
    missing = [name for name in dst.joints if name not in index]
    if missing:
        raise ValueError(
            f"the {src.name} layout has no joint for {', '.join(missing)} of {dst.name}: a "
            f"file in the {src.name} layout can be remapped only into layouts whose joints it has"
        )
    return np.array([index[name] for name in dst.joints])


def spine_points(layout: Layout, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bottom and top of the spine for joints `x` (..., V, C), per layout."""
    if layout.spine is not None:
        return x[..., layout.spine[0], :], x[..., layout.spine[1], :]
    if layout.hips is None or layout.left_right is None:
        raise ValueError(f"layout {layout.name!r} has no named spine")
    bottom = x[..., list(layout.hips), :].mean(-2)
    top = x[..., list(layout.left_right), :].mean(-2)
    return bottom, top


# MediaPipe BlazePose (33) -> Kinect v2 (25). Each NTU joint is the mean of the listed
# BlazePose landmarks (one listed three times weighs three times).
# Exact: shoulders, elbows, wrists, knees, ankles.
# Approximated: hips (Kinect's sit further in, 0.12 m vs 0.22 m apart on real data, so each is
# pulled a quarter of the way toward the other), spine base (mid-hips), spine shoulder
# (mid-shoulders), spine mid (mean of both), neck (half way between mid-shoulders and the
# mouth), head (mid-ears, the skull centre Kinect tracks), hands (mean of the index and pinky
# knuckles), hand tips (index knuckle), thumbs (thumb landmark), feet (foot index, i.e. the
# toes; Kinect's foot joint sits a little behind).
MEDIAPIPE_TO_NTU25: tuple[tuple[int, ...], ...] = (
    (23, 24),           # spine_base
    (11, 12, 23, 24),   # spine_mid
    (11, 12, 9, 10),    # neck
    (7, 8),             # head
    (11,), (13,), (15,), (17, 19),   # left shoulder, elbow, wrist, hand
    (12,), (14,), (16,), (18, 20),   # right shoulder, elbow, wrist, hand
    (23, 23, 23, 24), (25,), (27,), (31,),   # left hip, knee, ankle, foot
    (24, 24, 24, 23), (26,), (28,), (32,),   # right hip, knee, ankle, foot
    (11, 12),           # spine_shoulder
    (19,), (21,),       # left hand tip, left thumb
    (20,), (22,),       # right hand tip, right thumb
)  # fmt: skip


def mediapipe_to_ntu_matrix() -> np.ndarray:
    """(25, 33) averaging matrix: ntu = W @ mediapipe, joint-wise."""
    w = np.zeros((NTU25.num_joints, MEDIAPIPE33.num_joints), np.float32)
    for v, sources in enumerate(MEDIAPIPE_TO_NTU25):
        np.add.at(w[v], list(sources), 1.0 / len(sources))
    return w
