"""The annotation format every skeleton source in skelact exchanges: its rules and errors.

Compatible with pyskl / mmaction2 (`ntu60_3danno.pkl` loads as is)::

    {"split": {name: [frame_dir, ...]},
     "annotations": [{"frame_dir": str, "label": int (0-based),
                      "keypoint": float32 (M, T, V, C), "total_frames": int, ...}]}

Optional per-sample fields skelact adds (pyskl ignores unknown keys): "keypoint_score"
(M, T, V), "subject", "camera", "setup", "view", "modalities", "color_xy" / "depth_xy"
(M, T, V, 2 pixel positions for cropping). Optional top-level keys: "layout" (a name from
`skelact.layouts`), "classes" (class names, index = label), "dataset", "report".
Reading and writing files: `skelact.data.formats.annotations`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

REQUIRED_FIELDS = ("frame_dir", "label", "keypoint", "total_frames")
# optional fields shaped like the keypoints' first dims: (M, T, V) for these names, (M, T) for
# "mask" (the store checks them against "keypoint")
LIKE_KEYPOINT = {"keypoint_2d": 3, "keypoint_score": 3, "color_xy": 3, "depth_xy": 3, "mask": 2}
# fields with a joint axis (M, T, V, ...): what a change of layout reorders
PER_JOINT_FIELDS = ("keypoint", *(f for f, dims in LIKE_KEYPOINT.items() if dims == 3))
# Sanity bounds on what a file may ask for (a stranger's file must not make a model allocate
# terabytes): bodies, frames, joints (a known layout fixes them), channels, and the labels of
# a file without a class table (whose class count is max label + 1).
MAX_BODIES, MAX_FRAMES, MAX_JOINTS, MAX_CHANNELS = 64, 100_000, 1024, 4
MAX_LABEL = 99_999


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and the offending sample."""


def num_classes(data: dict[str, Any]) -> int:
    """Class count: the class table's length if present, else max label + 1."""
    if data.get("classes"):
        return len(data["classes"])
    return max(int(a["label"]) for a in data["annotations"]) + 1


def validate(data: Any, source: str = "<annotations>") -> None:
    """Raise AnnotationError naming `source` and the sample for anything malformed."""
    if not isinstance(data, dict) or "annotations" not in data or "split" not in data:
        raise AnnotationError(f"{source}: expected a dict with keys 'split' and 'annotations'")
    anns = data["annotations"]
    if not isinstance(anns, list) or not anns:
        raise AnnotationError(f"{source}: 'annotations' must be a non-empty list")
    n_cls = check_top(data, source)
    joints = layout_joints(data.get("layout"))
    names = set()
    for i, ann in enumerate(anns):
        _validate_sample(ann, i, n_cls, source, joints)
        if ann["frame_dir"] in names:
            raise AnnotationError(
                f"{source}: annotation {i} repeats the name {ann['frame_dir']!r} "
                "(frame_dir must be unique)"
            )
        names.add(ann["frame_dir"])
    validate_splits(data["split"], names, source)


def validate_splits(split: Any, names, source: str = "<annotations>") -> None:
    """Every split member must be a known sample name (`names`: a set or dict of names)."""
    if not isinstance(split, dict):
        raise AnnotationError(f"{source}: 'split' must be a dict of name -> sample names")
    for name, members in split.items():
        unknown = [m for m in members if m not in names]
        if unknown:
            raise AnnotationError(
                f"{source}: split {name!r} names {len(unknown)} unknown sample(s), "
                f"e.g. {unknown[0]!r}"
            )


def validate_sample(ann: Any, i: int, n_cls: int | None, source: str) -> None:
    """Raise AnnotationError naming `source` and sample `i` if it is malformed."""
    _validate_sample(ann, i, n_cls, source)


def check_top(data: dict[str, Any], source: str) -> int | None:
    """Check "classes" (a list of names) and "layout" (a known layout's name); returns the
    class count, None without a class table."""
    classes = data.get("classes")
    if classes is not None and (
        not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes)
    ):
        got = repr(classes)[:60]
        raise AnnotationError(f"{source}: 'classes' must be a list of names, got {got}")
    layout_joints(data.get("layout"), source)
    return len(classes) if classes else None


def layout_joints(layout: Any, source: str = "<annotations>") -> int | None:
    """The joint count a layout name fixes (None: no layout, or "generic")."""
    from skelact.layouts import LAYOUTS

    if layout is None or layout == "generic":
        return None
    if not isinstance(layout, str) or layout not in LAYOUTS:
        known = sorted(LAYOUTS) + ["generic"]
        raise AnnotationError(f"{source}: unknown layout {repr(layout)[:40]}; known: {known}")
    return LAYOUTS[layout].num_joints


def check_label(label: Any, n_cls: int | None, where: str) -> None:
    """A label is an int in 0..n_cls - 1, or 0..MAX_LABEL without a class table."""
    top = n_cls - 1 if n_cls else MAX_LABEL
    if not isinstance(label, (int, np.integer)) or not 0 <= label <= top:
        bound = f"0..{top}" + ("" if n_cls else ", as there is no class table")
        raise AnnotationError(f"{where}: label {label!r} out of range ({bound})")


def check_keypoint_shape(shape: tuple, joints: int | None, where: str) -> None:
    """(M, T, V, C) with 1..MAX_BODIES bodies, 1..MAX_FRAMES frames, V = the layout's joints
    (1..MAX_JOINTS without one) and 1..MAX_CHANNELS channels."""
    if len(shape) != 4:
        raise AnnotationError(f"{where}: keypoint must be an array (M, T, V, C), got {shape}")
    m, t, v, c = (int(s) for s in shape)
    if t == 0:
        raise AnnotationError(f"{where}: has no frames (keypoint {shape})")
    v_ok = v == joints if joints else 1 <= v <= MAX_JOINTS
    if not (1 <= m <= MAX_BODIES and 1 <= t <= MAX_FRAMES and v_ok and 1 <= c <= MAX_CHANNELS):
        want = f"V = {joints} (the layout's)" if joints else f"V in 1..{MAX_JOINTS}"
        raise AnnotationError(
            f"{where}: keypoint shape {shape} out of bounds (M in 1..{MAX_BODIES}, T in "
            f"1..{MAX_FRAMES}, {want}, C in 1..{MAX_CHANNELS})"
        )


def finite(kp: np.ndarray) -> bool:
    """Whether every value is finite (about 5 us for an NTU sample)."""
    return kp.dtype.kind != "f" or bool(np.isfinite(kp).all())


def check_finite(kp: np.ndarray, where: str) -> None:
    """Every coordinate finite (a NaN would read as an absent body, silently)."""
    if not finite(kp):
        bad = np.argwhere(~np.isfinite(kp))[0]
        raise AnnotationError(
            f"{where}: non-finite coordinate at body {bad[0]}, frame {bad[1]}, joint {bad[2]}"
        )


def check_total_frames(total: Any, where: str) -> None:
    if not isinstance(total, (int, np.integer)) or not 1 <= total <= MAX_FRAMES:
        raise AnnotationError(f"{where}: has no frames or a bad total_frames ({total!r})")


def _validate_sample(
    ann: Any, i: int, n_cls: int | None, source: str, joints: int | None = None
) -> None:
    where = f"{source}: annotation {i}"
    if not isinstance(ann, dict):
        raise AnnotationError(f"{where} is not a dict")
    missing = [k for k in REQUIRED_FIELDS if k not in ann]
    if missing:
        raise AnnotationError(f"{where} ({ann.get('frame_dir', '?')}) misses field(s) {missing}")
    where = f"{source}: sample {ann['frame_dir']!r}"
    if not isinstance(ann["frame_dir"], str):  # a store names samples by text
        raise AnnotationError(
            f"{where}: frame_dir must be a string, got {type(ann['frame_dir']).__name__}"
        )
    check_label(ann["label"], n_cls, where)
    kp = ann["keypoint"]
    if not isinstance(kp, np.ndarray) or kp.ndim != 4:
        shape = getattr(kp, "shape", type(kp).__name__)
        raise AnnotationError(f"{where}: keypoint must be an array (M, T, V, C), got {shape}")
    check_keypoint_shape(kp.shape, joints, where)
    check_total_frames(ann["total_frames"], where)
    check_finite(kp, where)
    score = ann.get("keypoint_score", kp[..., 0])
    if getattr(score, "shape", None) != kp.shape[:3]:
        raise AnnotationError(
            f"{where}: keypoint_score must be an array of shape {kp.shape[:3]} "
            f"(M, T, V, as keypoint), got {getattr(score, 'shape', type(score).__name__)}"
        )
