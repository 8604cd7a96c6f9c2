"""Importers for the Northwestern-UCLA and UTD-MHAD skeleton datasets (Kinect v1, 20 joints).

Both write an annotation store (`skelact.data.formats.store`; a pyskl pickle for an `out` ending in
.pkl) with layout "kinect20" and one body: keypoint float32 (1, T, 20, 3), sample by sample.

Axes and joint order, checked on the released files (see tests/test_importers.py):

- Both are Kinect v1 camera space already: metres, y up, z depth away from the sensor (about
  2.6 m for N-UCLA, 2.9 m for UTD-MHAD), the person's left side at -x as in NTU's Kinect v2
  files. No axis is changed.
- N-UCLA `all_sqe/*.json` joints are in the Kinect SDK order of `KINECT20` and are kept.
- UTD-MHAD `d_skel` (20, 3, T) starts head, shoulder_center, spine, hip_center (the mean head
  height is 0.45 m, hip centre -0.13 m), the rest follows the SDK order; the four are reversed
  at import (`UTD_TO_KINECT20`). Its joints 8-11 are the right arm: they carry the motion in
  every "right arm/hand" class.

Degenerate files: frames that are all zero or non-finite are removed (Kinect writes zeros when
it tracks nobody) and remaining non-finite coordinates set to 0 (Kinect's "not tracked"). A
file with no frame left, or unreadable or malformed, is dropped and reported with its reason;
short sequences are kept (they are real test samples) and listed in the report.

The report also lists samples byte-identical to one in another split: in the N-UCLA release
all 95 view-3 files of a02 and a03 repeat their view-2 twin, so cross-view accuracy on those
two classes is partly measured on training data. They stay (the published protocol has them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.formats.pickles import load_pickle
from skelact.data.sources.importing import (
    SkeletonFileError,
    clean_frames,
    dev_splits,
    run_import,
)

# N-UCLA action ids (a01..a12 with gaps) in label order, and the actions' names.
NUCLA_ACTION_IDS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
NUCLA_CLASSES = (
    "pick up with one hand", "pick up with two hands", "drop trash", "walk around",
    "sit down", "stand up", "donning", "doffing", "throw", "carry",
)  # fmt: skip

# UTD-MHAD actions a1..a27 (Chen, Jafari and Kehtarnavaz, ICIP 2015), label = action - 1.
UTD_MHAD_CLASSES = (
    "right arm swipe to the left", "right arm swipe to the right", "right hand wave",
    "two hand front clap", "right arm throw", "cross arms in the chest", "basketball shoot",
    "right hand draw x", "right hand draw circle (clockwise)",
    "right hand draw circle (counter clockwise)", "draw triangle", "bowling (right hand)",
    "front boxing", "baseball swing from right", "tennis right hand forehand swing",
    "arm curl (two arms)", "tennis serve", "two hand push", "right hand knock on door",
    "right hand catch an object", "right hand pick up and throw", "jogging in place",
    "walking in place", "sit to stand", "stand to sit", "forward lunge (left foot forward)",
    "squat (two arms stretch out)",
)  # fmt: skip

# KINECT20 joint k is UTD-MHAD joint UTD_TO_KINECT20[k].
UTD_TO_KINECT20 = (3, 2, 1, 0) + tuple(range(4, 20))

UTD_DEPTH_DIR = "Depth"  # beside Skeleton/: aA_sS_tT_depth.mat, d_depth (240, 320, T) uint16 mm

_NUCLA_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_v(\d+)")
_UTD_NAME = re.compile(r"a(\d+)_s(\d+)_t(\d+)_skeleton")


def read_nucla_json(path: str | os.PathLike) -> dict[str, Any]:
    """One N-UCLA `all_sqe` json -> a sample with keypoint (1, T, 20, 3)."""
    path = Path(path)
    match = _NUCLA_NAME.fullmatch(path.stem)
    if match is None:
        raise SkeletonFileError(path, "name is not aAA_sSS_eEE_vVV", "bad_name")
    action, subject, take, view = map(int, match.groups())
    if action not in NUCLA_ACTION_IDS:
        raise SkeletonFileError(path, f"unknown action a{action:02d}", "bad_name")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        joints = np.asarray(raw["skeletons"], dtype=np.float64)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise SkeletonFileError(path, f"not a readable N-UCLA json ({err!r})") from err
    if joints.ndim != 3 or joints.shape[1:] != (20, 3):
        raise SkeletonFileError(path, f"skeletons have shape {joints.shape}, want (T, 20, 3)")
    label = NUCLA_ACTION_IDS.index(action)
    if raw.get("label", label + 1) != label + 1:
        problem = f"label {raw['label']} disagrees with action a{action:02d} (want {label + 1})"
        raise SkeletonFileError(path, problem, "label_mismatch")
    keypoint = clean_frames(joints, path)[None]  # (1, T, 20, 3)
    return {
        "frame_dir": path.stem,
        "label": label,
        "keypoint": keypoint,
        "total_frames": keypoint.shape[1],
        "subject": subject,
        "view": view,
        "camera": view,
        "take": take,
    }


def read_utd_mhad_mat(path: str | os.PathLike) -> dict[str, Any]:
    """One UTD-MHAD `aA_sS_tT_skeleton.mat` -> a sample with keypoint (1, T, 20, 3) in KINECT20."""
    import scipy.io

    path = Path(path)
    match = _UTD_NAME.fullmatch(path.stem)
    if match is None:
        raise SkeletonFileError(path, "name is not aA_sS_tT_skeleton", "bad_name")
    action, subject, trial = map(int, match.groups())
    if not 1 <= action <= len(UTD_MHAD_CLASSES):
        raise SkeletonFileError(path, f"unknown action a{action}", "bad_name")
    try:
        skel = np.asarray(scipy.io.loadmat(path)["d_skel"], dtype=np.float64)
    except Exception as err:  # noqa: BLE001 - loadmat raises many types for a corrupt file
        raise SkeletonFileError(path, f"not a readable .mat with d_skel ({err!r})") from err
    if skel.ndim == 2 and skel.shape == (20, 3):
        skel = skel[:, :, None]  # MATLAB drops a trailing singleton: a one-frame sequence
    if skel.ndim != 3 or skel.shape[:2] != (20, 3):
        raise SkeletonFileError(path, f"d_skel has shape {skel.shape}, want (20, 3, T)")
    joints = skel.transpose(2, 0, 1)[:, UTD_TO_KINECT20]  # (T, 20, 3) in KINECT20 order
    keypoint = clean_frames(joints, path)[None]
    return {
        "frame_dir": f"a{action}_s{subject}_t{trial}",
        "label": action - 1,
        "keypoint": keypoint,
        "total_frames": keypoint.shape[1],
        "subject": subject,
        "trial": trial,
    }


def prepare_nucla(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    train_views: Iterable[int] = (1, 2),
    val_views: Iterable[int] = (3,),
    short_frames: int = 10,
    verbose: bool = True,
) -> dict[str, Any]:
    """Import N-UCLA `root/all_sqe/*.json` into the annotation file `out` (cross-view splits).

    Splits "xview_train" (views 1, 2) and "xview_val" (view 3), plus the development pair
    "xview_dev_train" (view 1) / "xview_dev_val" (view 2) carved from the training views for
    tuning without the test view, and "xview_val_unique": view 3 without the files that are
    byte-identical copies of a training file. Returns the report, also stored under the file's
    "report"; checks the val split against `root/val_label.pkl` when present.
    """
    folder = Path(root) / "all_sqe"
    train_views = list(train_views)
    splits = {
        "xview_train": set(train_views),
        "xview_val": set(val_views),
        **dev_splits("xview", train_views),
    }

    def amend(report: dict, seen: dict, split: dict) -> None:
        report["val_label_check"] = _check_nucla_val(Path(root), seen, split["xview_val"])
        # the test view without the files that repeat a training file byte for byte
        repeated = {name for pair in report["cross_split_duplicates"] for name in pair}
        split["xview_val_unique"] = [n for n in split["xview_val"] if n not in repeated]
        report["split_counts"]["xview_val_unique"] = len(split["xview_val_unique"])

    return run_import(
        out, "nucla", NUCLA_CLASSES, (folder, "*.json"), read_nucla_json, "view", splits,
        verbose, short_frames=short_frames, amend=amend,
    )  # fmt: skip


def prepare_utd_mhad(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    train_subjects: Iterable[int] = (1, 3, 5, 7),
    val_subjects: Iterable[int] = (2, 4, 6, 8),
    short_frames: int = 10,
    verbose: bool = True,
) -> dict[str, Any]:
    """Import UTD-MHAD `root/Skeleton/*.mat` into the annotation file `out` (cross-subject splits).

    Splits "xsub_train" (subjects 1 3 5 7) and "xsub_val" (2 4 6 8), plus the development
    pair "xsub_dev_train" (1 3 5) / "xsub_dev_val" (7) carved from the training subjects;
    joints reordered to KINECT20. A sample whose depth maps `root/Depth/aA_sS_tT_depth.mat`
    exist records them as "depth_path" (relative to root: `skelact prepare features
    --modality depth --root ROOT`) and lists "depth" in its "modalities". Returns the report,
    also stored under the file's "report" (with the count of samples with depth).
    """
    folder = Path(root) / "Skeleton"
    depth_dir = Path(root) / UTD_DEPTH_DIR

    with_depth = set()

    def read_utd_mhad(path: Path) -> dict[str, Any]:
        sample = read_utd_mhad_mat(path)
        depth = f"{UTD_DEPTH_DIR}/{sample['frame_dir']}_depth.mat"
        has_depth = (depth_dir / Path(depth).name).is_file()
        sample["modalities"] = ["skeleton", "depth"] if has_depth else ["skeleton"]
        if has_depth:
            sample["depth_path"] = depth
            with_depth.add(sample["frame_dir"])
        return sample

    def amend(report: dict, seen: dict, split: dict) -> None:
        report["with_depth"] = len(with_depth & set(seen))

    train_subjects = list(train_subjects)
    splits = {
        "xsub_train": set(train_subjects),
        "xsub_val": set(val_subjects),
        **dev_splits("xsub", train_subjects),
    }
    return run_import(
        out, "utd_mhad", UTD_MHAD_CLASSES, (folder, "*.mat"), read_utd_mhad, "subject",
        splits, verbose, short_frames=short_frames, amend=amend,
    )  # fmt: skip


def _check_nucla_val(root: Path, seen: dict[str, dict], val: list[str]) -> str:
    """Compare the view-3 split with the release's val_label.pkl (names and labels)."""
    path = root / "val_label.pkl"
    if not path.is_file():
        return "val_label.pkl absent"
    entries = load_pickle(path)  # restricted: arrays, numbers, strings, containers only
    want = {e["file_name"]: e["label"] - 1 for e in entries}
    have = {name: seen[name]["label"] for name in val}
    agree = sum(have.get(name) == label for name, label in want.items())
    return f"{agree}/{len(want)} val_label.pkl entries match; {len(have)} val samples imported"
