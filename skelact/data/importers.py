"""Importers for the Northwestern-UCLA and UTD-MHAD skeleton datasets (Kinect v1, 20 joints).

Both write an annotation store (`skelact.data.store`; a pyskl pickle for an `out` ending in
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

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from skelact.data.pickles import load_pickle
from skelact.data.store_write import StoreWriter
from skelact.layouts import KINECT20

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

_NUCLA_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_v(\d+)")
_UTD_NAME = re.compile(r"a(\d+)_s(\d+)_t(\d+)_skeleton")


class SkeletonFileError(ValueError):
    """A source file that cannot become a sample; `reason` is the short key used in reports."""

    def __init__(self, path: str | os.PathLike, problem: str, reason: str = "unreadable"):
        super().__init__(f"{Path(path).name}: {problem}")
        self.reason = reason


def clean_frames(joints: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Drop empty (all zero or non-finite) frames, zero the other non-finite values.

    `joints` (T, V, C) -> float32 (T', V, C); raises SkeletonFileError when no frame is left.
    """
    finite = np.isfinite(joints)
    empty = (~finite | (joints == 0)).all(axis=(1, 2))
    if empty.all():
        reason = "all_zero" if finite.all() else "non_finite"
        raise SkeletonFileError(path, f"all {len(joints)} frame(s) are empty ({reason})", reason)
    kept = np.where(finite, joints, 0.0)[~empty]
    return kept.astype(np.float32)


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
        **_dev_splits("xview", train_views),
    }
    with StoreWriter(out) as writer:
        seen, split, dropped, n_files = _collect(
            writer, folder, "*.json", read_nucla_json, "view", splits, verbose
        )
        report = _report("nucla", n_files, seen, split, dropped, short_frames)
        report["val_label_check"] = _check_nucla_val(Path(root), seen, split["xview_val"])
        # the test view without the files that repeat a training file byte for byte
        repeated = {name for pair in report["cross_split_duplicates"] for name in pair}
        split["xview_val_unique"] = [n for n in split["xview_val"] if n not in repeated]
        report["split_counts"]["xview_val_unique"] = len(split["xview_val_unique"])
        return _save(writer, "nucla", NUCLA_CLASSES, split, report, out, verbose)


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
    joints reordered to KINECT20. Returns the report, also stored under the file's "report".
    """
    folder = Path(root) / "Skeleton"
    train_subjects = list(train_subjects)
    splits = {
        "xsub_train": set(train_subjects),
        "xsub_val": set(val_subjects),
        **_dev_splits("xsub", train_subjects),
    }
    with StoreWriter(out) as writer:
        seen, split, dropped, n_files = _collect(
            writer, folder, "*.mat", read_utd_mhad_mat, "subject", splits, verbose
        )
        report = _report("utd_mhad", n_files, seen, split, dropped, short_frames)
        return _save(writer, "utd_mhad", UTD_MHAD_CLASSES, split, report, out, verbose)


def _dev_splits(protocol: str, train_groups: list, held_out: int = 1) -> dict[str, set]:
    """A validation pair inside the training groups: the last `held_out` groups held out.

    Hyper-parameters are tuned on these, never on the test split.
    """
    if len(train_groups) <= held_out:
        return {}
    return {
        f"{protocol}_dev_train": set(train_groups[:-held_out]),
        f"{protocol}_dev_val": set(train_groups[-held_out:]),
    }


def _collect(
    writer: StoreWriter,
    folder: Path,
    pattern: str,
    read: Callable[[Path], dict[str, Any]],
    key: str,
    splits: dict[str, set[int]],
    verbose: bool,
) -> tuple[dict[str, dict], dict[str, list[str]], dict[str, list[str]], int]:
    """Read every file into `writer`; split membership by `ann[key]`. Returns, per sample name,
    what the report needs (frames, label, keypoint digest), the splits, the dropped, #files."""
    files = sorted(folder.glob(pattern))
    if not files:
        raise FileNotFoundError(f"{folder}: no {pattern} skeleton files")
    seen, split, dropped = {}, {name: [] for name in splits}, {}
    for path in tqdm(files, desc=f"{read.__name__[5:]}", unit="file", disable=not verbose):
        try:
            ann = read(path)
            names = [s for s, values in splits.items() if ann[key] in values]
            if not names:
                raise SkeletonFileError(path, f"{key} {ann[key]} is in no split", "no_split")
        except SkeletonFileError as err:
            dropped.setdefault(err.reason, []).append(str(err))
            continue
        writer.add(ann)
        seen[ann["frame_dir"]] = {
            "frames": ann["total_frames"],
            "label": ann["label"],
            "digest": hashlib.sha1(ann["keypoint"].tobytes()).hexdigest(),
        }
        for name in names:
            split[name].append(ann["frame_dir"])
    if not seen:
        raise ValueError(f"{folder}: none of the {len(files)} files is usable: {dropped}")
    return seen, split, dropped, len(files)


def _save(writer, dataset, classes, split, report, out, verbose, layout=KINECT20) -> dict[str, Any]:
    report["out"] = str(out)
    writer.close(split, layout=layout.name, dataset=dataset, classes=list(classes), report=report)
    if verbose:
        _print_summary(report)
    return report


def _report(dataset, n_files, seen, split, dropped, short_frames) -> dict[str, Any]:
    lengths = np.array([s["frames"] for s in seen.values()])
    short = [name for name, s in seen.items() if s["frames"] < short_frames]
    return {
        "dataset": dataset,
        "files": n_files,
        "samples": len(seen),
        "split_counts": {name: len(members) for name, members in split.items()},
        "kept_short": {"count": len(short), "below_frames": short_frames, "names": short},
        "dropped": {"count": sum(map(len, dropped.values())), "reasons": dropped},
        "frames": {
            "min": int(lengths.min()),
            "median": float(np.median(lengths)),
            "max": int(lengths.max()),
        },
        "cross_split_duplicates": _cross_split_duplicates(seen, split),
    }


def _cross_split_duplicates(seen: dict[str, dict], split: dict[str, list[str]]) -> list[list[str]]:
    """Pairs of samples in different splits whose keypoints are byte-identical."""
    # dev splits overlap the train split by design: only the protocol's own splits count
    where = {n: s for s, members in split.items() if "_dev_" not in s for n in members}
    first: dict[str, str] = {}
    pairs = []
    for name, info in seen.items():
        other = first.setdefault(info["digest"], name)
        if other != name and where.get(other) != where.get(name):
            pairs.append([other, name])
    return pairs


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


def _print_summary(report: dict[str, Any]) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in report["split_counts"].items())
    frames = report["frames"]
    print(
        f"{report['dataset']}: {report['files']} files -> {report['samples']} samples "
        f"({counts}); frames min {frames['min']} median {frames['median']:g} "
        f"max {frames['max']}"
    )
    short = report["kept_short"]
    print(f"  kept short (< {short['below_frames']} frames): {short['count']}")
    reasons = {k: len(v) for k, v in report["dropped"]["reasons"].items()}
    print(f"  dropped: {report['dropped']['count']} {reasons if reasons else ''}".rstrip())
    empty = [k for k, v in report["split_counts"].items() if not v]
    if empty:
        print(f"  warning: empty split(s) {', '.join(empty)}; training on them will be refused")
    dups = report["cross_split_duplicates"]
    if dups:
        print(
            f"  warning: {len(dups)} sample(s) have keypoints identical to a sample in another "
            f"split, e.g. {dups[0][0]} == {dups[0][1]}"
        )
    if "val_label_check" in report:
        print(f"  {report['val_label_check']}")
    print(f"  wrote {report['out']}")
