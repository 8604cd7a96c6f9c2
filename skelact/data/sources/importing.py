"""The steps every dataset importer shares: reading failures with a reason, frame cleaning,
development splits carved from the training groups, collecting files into a store, the report
and its summary. The importers: `skelact.data.sources.importers` (N-UCLA, UTD-MHAD) and
`skelact.data.sources.text_importers` (SBU, KARD, MSR DailyActivity3D)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from skelact.data.formats.store_write import StoreWriter
from skelact.files import write_report
from skelact.layouts import KINECT20


class SkeletonFileError(ValueError):
    """A source file that cannot become a sample; `reason` is the short key used in reports."""

    def __init__(self, path: str | os.PathLike, problem: str, reason: str = "unreadable"):
        super().__init__(f"{Path(path).name}: {problem}")
        self.path, self.problem, self.reason = Path(path), problem, reason


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


def dev_splits(protocol: str, train_groups: list, held_out: int = 1) -> dict[str, set]:
    """A validation pair inside the training groups: the last `held_out` groups held out.

    Hyper-parameters are tuned on these, never on the test split.
    """
    if len(train_groups) <= held_out:
        return {}
    return {
        f"{protocol}_dev_train": set(train_groups[:-held_out]),
        f"{protocol}_dev_val": set(train_groups[-held_out:]),
    }


def collect(
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
        raise FileNotFoundError(no_files(folder, pattern))
    seen, split, dropped, origin = {}, {name: [] for name in splits}, {}, {}
    for path in tqdm(files, desc=f"{read.__name__[5:]}", unit="file", disable=not verbose):
        try:
            ann = read(path)
            names = [s for s, values in splits.items() if ann[key] in values]
            if not names:
                raise SkeletonFileError(path, f"{key} {ann[key]} is in no split", "no_split")
            if ann["frame_dir"] in origin:  # e.g. a01_s1_t1 beside a1_s1_t1: the first kept
                first = origin[ann["frame_dir"]].relative_to(folder)
                raise SkeletonFileError(
                    path, f"names the sample {ann['frame_dir']}, as {first} does (kept)",
                    "duplicate",
                )  # fmt: skip
        except SkeletonFileError as err:
            # the file by its path in the set (SBU's are all skeleton_pos.txt)
            dropped.setdefault(err.reason, []).append(f"{path.relative_to(folder)}: {err.problem}")
            continue
        writer.add(ann)
        origin[ann["frame_dir"]] = path
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


def no_files(folder: Path, pattern: str) -> str:
    """Why `folder` has no `pattern` files, naming the folder meant where it can be seen: the
    dataset's own sub-folder given (utd_mhad/Skeleton for utd_mhad), a folder one level too
    high (the set is in a sub-folder) or too low (an SBU set folder for the set's root)."""
    if not folder.is_dir():
        root, sub = folder.parent, folder.name
        if sub == root.name:  # ROOT/Skeleton given for ROOT: .../Skeleton/Skeleton
            return f"{root} is the dataset's {sub}/ folder: give the folder above it, {root.parent}"
        missing = folder
        while not missing.parent.is_dir() and missing.parent != missing:
            missing = missing.parent
        if missing != folder:
            return f"{missing}: no such folder"
        below = next(root.glob(f"*/{sub}/{pattern}"), None)
        hint = f"; did you mean {below.parents[1]}?" if below is not None else ""
        return f"{root} has no {sub}/ folder{hint}"
    below = next(folder.glob(f"*/{pattern}"), None)
    if below is not None:  # one level too high
        hint = f"; did you mean {folder / below.relative_to(folder).parts[0]}?"
    elif next(folder.parent.glob(pattern), None) is not None:  # one level too low
        hint = f"; did you mean {folder.parent}?"
    else:
        hint = ""
    return f"{folder}: no {pattern} skeleton files{hint}"


def save_import(
    writer, dataset, classes, split, report, out, verbose, layout=KINECT20
) -> dict[str, Any]:
    report["out"] = str(out)
    writer.close(split, layout=layout.name, dataset=dataset, classes=list(classes), report=report)
    report_path = write_report(out, report)  # beside the file too (it is in the file's meta)
    if verbose:
        print_summary(report, report_path)
    return report


def import_report(dataset, n_files, seen, split, dropped, short_frames) -> dict[str, Any]:
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


SHOWN = 5  # dropped files named in the summary; the rest are in the report


def print_summary(report: dict[str, Any], report_path: Path | None = None) -> None:
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
    why = [line for lines in report["dropped"]["reasons"].values() for line in lines]
    for line in why[:SHOWN]:
        print(f"    {line}")
    if len(why) > SHOWN:
        print(f"    ... and {len(why) - SHOWN} more (see {report_path or 'the report'})")
    empty = [k for k, v in report["split_counts"].items() if not v]
    if empty:
        print(f"  warning: empty split(s) {', '.join(empty)}; training on them will be refused")
    dups = report["cross_split_duplicates"]
    if dups:
        print(
            f"  warning: {len(dups)} sample(s) have keypoints identical to a sample in another "
            f"split, e.g. {dups[0][0]} == {dups[0][1]}"
        )
    if "with_depth" in report:
        print(f"  with depth maps: {report['with_depth']} samples")
    if "val_label_check" in report:
        print(f"  {report['val_label_check']}")
    print(f"  wrote {report['out']}" + (f" and {report_path}" if report_path else ""))


def run_import(
    out,
    dataset: str,
    classes,
    files: tuple,
    reader,
    group: str,
    splits: dict,
    verbose: bool,
    *,
    layout=KINECT20,
    short_frames: int = 10,
    amend: Callable | None = None,
) -> dict[str, Any]:
    """Import the files `files` = (folder, glob pattern) with `reader` into the store `out`:
    collect, report (`amend(report, seen, split)` adds a dataset's own entries), save."""
    folder, pattern = files
    with StoreWriter(out) as writer:
        seen, split, dropped, n_files = collect(
            writer, Path(folder), pattern, reader, group, splits, verbose
        )
        report = import_report(dataset, n_files, seen, split, dropped, short_frames)
        if amend is not None:
            amend(report, seen, split)
        return save_import(writer, dataset, classes, split, report, out, verbose, layout)
