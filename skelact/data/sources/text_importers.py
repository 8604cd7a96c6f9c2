"""Importers for three text-format Kinect v1 datasets: SBU Kinect Interaction, KARD and MSR
DailyActivity3D. Each streams its samples into an annotation store (`StoreWriter`; an `out`
ending in .pkl gets a pyskl pickle), in metres, y up, the person's left side at -x as in NTU
(see ../shared/data/README.md for the file formats):

- SBU (`<set>/<class>/<take>/skeleton_pos.txt`, CSV): two people, keypoint (2, T, 15, 3) in
  layout "openni15". Coordinates are de-normalised with the dataset README's formula
  (X = 1280 - 2560 x, Y = 960 - 1920 y, Z = 10000 z / 7.8125, millimetres) and divided by 1000.
  Person A (left of the image) is body 0 (a one-person model keeps the more active person:
  `contract.most_active`). Splits: the README's 5 folds, "foldK_train" /
  "foldK_test", and "foldK_dev_train" / "foldK_dev_val" inside foldK_train (the next fold's sets
  held out).
- KARD (`aAA_sSS_eEE_realworld.txt`): one person, (1, T, 15, 3) in "openni15". The file lists
  the right side first and puts it at smaller x; joints are reordered and x negated (millimetres
  -> metres). Protocol (our choice, the paper's subject halves are unverified): subjects 1-5
  train, 6-10 test ("xsub_train" / "xsub_test"); dev: subjects 1-3 / 4-5.
- MSR DailyActivity3D (`aAA_sSS_eEE_skeleton_proj.txt`): one person, (1, T, 20, 3) in
  "kinect20", already metres in the Kinect SDK's axes. Frames where any joint is non-finite or
  exactly at the origin are Kinect failures (the README's NaN and zero frames) and are dropped;
  the count is in the report. Cross-subject: odd subjects train, even test; dev: 1 3 5 / 7 9.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.sources.importing import (
    SkeletonFileError,
    clean_frames,
    dev_splits,
    run_import,
)
from skelact.layouts import OPENNI15

SBU_CLASSES = (
    "approaching", "departing", "kicking", "punching", "pushing", "hugging",
    "shaking hands", "exchanging",
)  # fmt: skip
# The dataset README's 5 folds of sets.
SBU_FOLDS = (
    ("s01s02", "s03s04", "s05s02", "s06s04"),
    ("s02s03", "s02s07", "s03s05", "s05s03"),
    ("s01s03", "s01s07", "s07s01", "s07s03"),
    ("s02s01", "s02s06", "s03s02", "s03s06"),
    ("s04s02", "s04s03", "s04s06", "s06s02", "s06s03"),
)

KARD_CLASSES = (
    "horizontal arm wave", "high arm wave", "two hand wave", "catch cap", "high throw",
    "draw x", "draw tick", "toss paper", "forward kick", "side kick", "take umbrella", "bend",
    "hand clap", "walk", "phone call", "drink", "sit down", "stand up",
)  # fmt: skip
# OPENNI15 joint k is KARD line KARD_TO_OPENNI15[k] (0-based) of a frame.
KARD_TO_OPENNI15 = (0, 1, 8, 5, 6, 7, 2, 3, 4, 12, 13, 14, 9, 10, 11)

MSR_DAILY_CLASSES = (
    "drink", "eat", "read book", "call cellphone", "write on a paper", "use laptop",
    "use vacuum cleaner", "cheer up", "sit still", "toss paper", "play game",
    "lie down on sofa", "walk", "play guitar", "stand up", "sit down",
)  # fmt: skip

_KARD_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_realworld")
_MSR_NAME = re.compile(r"a(\d+)_s(\d+)_e(\d+)_skeleton_proj")
_SBU_SET = re.compile(r"s\d\ds\d\d")


def _load_text(path: Path, **kwargs) -> np.ndarray:
    """The file's numbers as a table; SkeletonFileError with a short reason (the repr of a
    decoding error holds the whole file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "input contained no data"
            table = np.loadtxt(path, ndmin=2, **kwargs)
    except UnicodeDecodeError as err:
        raise SkeletonFileError(
            path, f"not text (byte 0x{err.object[err.start]:02x} at offset {err.start})"
        ) from err
    except (OSError, ValueError) as err:
        raise SkeletonFileError(path, f"not a readable text table ({err})") from err
    if not table.size:
        raise SkeletonFileError(path, "empty: no numbers in the file")
    return table


def read_sbu(path: str | os.PathLike) -> dict[str, Any]:
    """One SBU `<set>/<class>/<take>/skeleton_pos.txt` -> keypoint (2, T, 15, 3) in metres."""
    path = Path(path)
    take, cls, set_name = path.parent.name, path.parent.parent.name, path.parents[2].name
    if not (_SBU_SET.fullmatch(set_name) and cls.isdigit() and take.isdigit()):
        raise SkeletonFileError(path, "path is not <sAAsBB>/<class>/<take>/", "bad_name")
    label = int(cls) - 1
    if not 0 <= label < len(SBU_CLASSES):
        raise SkeletonFileError(path, f"unknown class folder {cls}", "bad_name")
    table = _load_text(path, delimiter=",")
    if table.shape[1] != 91:
        raise SkeletonFileError(path, f"{table.shape[1]} values per line, want 91")
    norm = table[:, 1:].reshape(-1, 2, 15, 3).transpose(1, 0, 2, 3)  # (2, T, 15, 3)
    mm = np.stack(
        [1280 - 2560 * norm[..., 0], 960 - 1920 * norm[..., 1], norm[..., 2] * 10000 / 7.8125],
        axis=-1,
    )
    if not np.isfinite(mm).all():
        raise SkeletonFileError(path, "non-finite coordinates", "non_finite")
    keypoint = (mm / 1000).astype(np.float32)
    return {
        "frame_dir": f"{set_name}_a{int(cls):02d}_{take}",
        "label": label,
        "keypoint": keypoint,
        "total_frames": keypoint.shape[1],
        "set": set_name,
        "take": int(take),
        "first_frame": int(table[0, 0]),
    }


def read_kard(path: str | os.PathLike) -> dict[str, Any]:
    """One KARD `aAA_sSS_eEE_realworld.txt` -> keypoint (1, T, 15, 3), metres, x negated."""
    path = Path(path)
    action, subject, take = _parse_name(path, _KARD_NAME, len(KARD_CLASSES))
    table = _load_text(path)
    if table.shape[1] != 3 or len(table) % 15:
        raise SkeletonFileError(path, f"table {table.shape} is not 15 joints x 3 per frame")
    joints = table.reshape(-1, 15, 3)[:, KARD_TO_OPENNI15] / 1000  # (T, 15, 3) metres
    joints[..., 0] *= -1  # right side to +x, as in the Kinect SDK
    keypoint = clean_frames(joints, path)[None]
    return _sample(action, subject, take, keypoint)


def read_msr_daily(path: str | os.PathLike) -> dict[str, Any]:
    """One MSR DailyActivity3D `..._skeleton_proj.txt` -> keypoint (1, T, 20, 3), failed
    frames (a non-finite joint or one exactly at the origin) dropped."""
    path = Path(path)
    action, subject, take = _parse_name(path, _MSR_NAME, len(MSR_DAILY_CLASSES))
    table = _load_text(path)
    if table.shape[1] != 5 or len(table) % 20:
        raise SkeletonFileError(path, f"table {table.shape} is not 20 lines of 5 per frame")
    if not (table[:, 1] == np.tile(np.arange(1, 21), len(table) // 20)).all():
        raise SkeletonFileError(path, "joint column is not 1..20 in every frame")
    joints = table[:, 2:].reshape(-1, 20, 3)  # (T, 20, 3)
    failed = ~np.isfinite(joints).all(axis=(1, 2)) | (joints == 0).all(-1).any(-1)
    if failed.all():
        raise SkeletonFileError(path, f"all {len(joints)} frames failed", "non_finite")
    keypoint = joints[~failed].astype(np.float32)[None]
    sample = _sample(action, subject, take, keypoint)
    sample["dropped_frames"] = np.flatnonzero(failed).tolist()
    return sample


def _parse_name(path: Path, pattern: re.Pattern, num_classes: int) -> tuple[int, int, int]:
    match = pattern.fullmatch(path.stem)
    if match is None:
        raise SkeletonFileError(path, f"name does not match {pattern.pattern}", "bad_name")
    action, subject, take = map(int, match.groups())
    if not 1 <= action <= num_classes:
        raise SkeletonFileError(path, f"unknown action a{action:02d}", "bad_name")
    return action, subject, take


def _sample(action: int, subject: int, take: int, keypoint: np.ndarray) -> dict:
    """A KARD or MSR DailyActivity3D sample, named aAA_sSS_eEE by its numbers (as the files
    are; a file named a1_s1_e1_... or a001_... gets the same name, not a cut-off one)."""
    return {
        "frame_dir": f"a{action:02d}_s{subject:02d}_e{take:02d}",
        "label": action - 1,
        "keypoint": keypoint,
        "total_frames": keypoint.shape[1],
        "subject": subject,
        "take": take,
    }


def prepare_sbu(
    root: str | os.PathLike, out: str | os.PathLike, *, verbose: bool = True
) -> dict[str, Any]:
    """Import SBU Kinect Interaction (clean) `root/<set>/<class>/<take>/skeleton_pos.txt`.

    Splits per fold k (1-5): "foldk_train" (the other 4 folds), "foldk_test", and the dev pair
    "foldk_dev_train" / "foldk_dev_val" (fold k+1's sets held out of foldk_train).
    """
    splits: dict[str, set[str]] = {}
    for k, test_sets in enumerate(SBU_FOLDS):
        dev_val = SBU_FOLDS[(k + 1) % len(SBU_FOLDS)]
        train = [s for fold in SBU_FOLDS if fold is not test_sets for s in fold]
        splits[f"fold{k + 1}_train"] = set(train)
        splits[f"fold{k + 1}_test"] = set(test_sets)
        splits[f"fold{k + 1}_dev_train"] = set(train) - set(dev_val)
        splits[f"fold{k + 1}_dev_val"] = set(dev_val)
    return run_import(
        out, "sbu", SBU_CLASSES, (root, "*/*/*/skeleton_pos.txt"), read_sbu, "set", splits,
        verbose, layout=OPENNI15,
    )  # fmt: skip


def _xsub_splits(train_subjects: Iterable[int], test_subjects: Iterable[int]) -> dict[str, set]:
    """Cross-subject train / test, and a dev pair holding out the last two training subjects."""
    train_subjects = list(train_subjects)
    return {
        "xsub_train": set(train_subjects),
        "xsub_test": set(test_subjects),
        **dev_splits("xsub", train_subjects, held_out=2),
    }


def prepare_kard(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    train_subjects: Iterable[int] = (1, 2, 3, 4, 5),
    test_subjects: Iterable[int] = (6, 7, 8, 9, 10),
    verbose: bool = True,
) -> dict[str, Any]:
    """Import KARD `root/*_realworld.txt`: "xsub_train" / "xsub_test" (subjects 1-5 / 6-10,
    our choice) and "xsub_dev_train" / "xsub_dev_val" (1-3 / 4-5)."""
    splits = _xsub_splits(train_subjects, test_subjects)
    return run_import(
        out, "kard", KARD_CLASSES, (root, "*_realworld.txt"), read_kard, "subject", splits,
        verbose, layout=OPENNI15,
    )  # fmt: skip


def prepare_msr_daily(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    train_subjects: Iterable[int] = (1, 3, 5, 7, 9),
    test_subjects: Iterable[int] = (2, 4, 6, 8, 10),
    verbose: bool = True,
) -> dict[str, Any]:
    """Import MSR DailyActivity3D `root/*_skeleton_proj.txt`: "xsub_train" / "xsub_test" (odd /
    even subjects) and "xsub_dev_train" / "xsub_dev_val" (1 3 5 / 7 9)."""
    splits = _xsub_splits(train_subjects, test_subjects)
    repaired: dict[str, list[int]] = {}

    @functools.wraps(read_msr_daily)
    def read(path: Path) -> dict[str, Any]:
        sample = read_msr_daily(path)
        if sample["dropped_frames"]:
            repaired[sample["frame_dir"]] = sample["dropped_frames"]
        return sample

    report = run_import(
        out, "msr_daily", MSR_DAILY_CLASSES, (root, "*_skeleton_proj.txt"), read, "subject",
        splits, verbose, amend=lambda report, *_: report.update(failed_frames_dropped=repaired),
    )  # fmt: skip
    if verbose:
        n = sum(map(len, repaired.values()))
        print(f"  failed frames dropped: {n} in {len(repaired)} files")
    return report
