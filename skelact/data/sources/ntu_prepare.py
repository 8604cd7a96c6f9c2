"""`skelact prepare ntu`: a folder of NTU .skeleton files -> the annotation store.

Parses in worker processes (each returns only the arrays of one file) and writes each sample
to the store as it arrives, so memory does not grow with the dataset; skips the official
missing-skeleton samples, records failures with their reasons, writes the official splits and
a report.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from skelact.data.formats.store_write import StoreWriter, disk_size
from skelact.data.sources.ntu import (
    DATASETS,
    _check_dataset,
    in_dataset,
    missing_samples,
    ntu_classes,
    parse_name,
    split_of,
)
from skelact.data.sources.ntu_bodies import COUNTERS
from skelact.data.sources.ntu_skeleton import SkeletonFormatError, load_skeleton_full
from skelact.files import write_report


def _parse_sample(task: tuple[str, int]) -> tuple[str, dict[str, Any] | None, str | None]:
    """Worker: one file -> (name, sample, None) or (name, None, reason); returns only arrays."""
    path, max_bodies = task
    name = parse_name(path)
    try:
        full = load_skeleton_full(path, max_bodies)
    except (SkeletonFormatError, OSError) as err:
        return str(name), None, str(err)
    m = len(full["body_ids"])
    if m == 0:
        return str(name), None, f"no body in any of its {full['total_frames']} frames"
    # Only the bodies found are stored (M = 1 or 2): consumers pad, as for pyskl's pickles.
    # Pixel positions as float16 (1 px steps up to 2048) keep the pickle small enough.
    sample = {
        "frame_dir": str(name), "label": name.action - 1, "keypoint": full["keypoint"][:m],
        "total_frames": full["total_frames"], "subject": name.subject, "camera": name.camera,
        "setup": name.setup, "replication": name.replication, "num_bodies": full["num_bodies"],
        "denoise": full["denoise"],
        "color_xy": full["color_xy"][:m].astype(np.float16),
        "depth_xy": full["depth_xy"][:m].astype(np.float16),
    }  # fmt: skip
    return str(name), sample, None


def _find_skeletons(root: Path) -> list[Path]:
    if root.is_file():
        raise FileNotFoundError(
            f"{root} is a file: --skeletons takes the folder holding the .skeleton files"
        )
    if not root.is_dir():
        raise FileNotFoundError(f"NTU skeleton folder {root} does not exist")
    files = sorted(root.rglob("*.skeleton"))
    if not files:
        raise FileNotFoundError(
            f"no *.skeleton files under {root} (expected NTU's raw skeleton folder, files named "
            "SsssCcccPpppRrrrAaaa.skeleton)"
        )
    return files


def _select_files(files: list[Path], dataset: str, report: dict[str, Any]) -> list[Path]:
    """Files to parse; counts the unrecognised, out-of-dataset, duplicate and missing ones."""
    missing, seen, todo = missing_samples(dataset), set(), []
    for f in files:
        try:
            name = parse_name(f)
        except ValueError:
            report["unrecognised_names"].append(f.name)
            continue
        if not in_dataset(name, dataset):
            report["outside_dataset"] += 1
        elif str(name) in seen:
            report["duplicates"].append(str(f))
        elif str(name) in missing:
            report["skipped_missing_names"].append(str(name))
        else:
            seen.add(str(name))
            todo.append(f)
    report["skipped_missing"] = len(report["skipped_missing_names"])
    return todo


def _parse_all(files: list[Path], workers: int, max_bodies: int, desc: str) -> Iterator[tuple]:
    """(name, sample, reason) per file, in file order; a Pool of `workers` when > 1."""
    tasks = [(str(f), max_bodies) for f in files]
    bar = {"total": len(tasks), "desc": desc, "unit": "file", "smoothing": 0.05}
    if workers <= 1:
        yield from tqdm(map(_parse_sample, tasks), **bar)
        return
    chunksize = max(1, min(32, len(tasks) // (workers * 8)))
    with multiprocessing.Pool(workers) as pool:
        yield from tqdm(pool.imap(_parse_sample, tasks, chunksize), **bar)


def _modalities(name: str, rgb: Path | None, depth: Path | None) -> list[str]:
    """The streams a sample has: skeleton, plus RGB / depth when found next to it."""
    mods = ["skeleton"]
    if rgb is not None and (rgb / f"{name}_rgb.avi").is_file():
        mods.append("rgb")
    if depth is not None and (depth / name).is_dir():
        mods.append("depth")
    return mods


def _empty_splits(dataset: str) -> dict[str, list[str]]:
    protocols = DATASETS[dataset]["protocols"]
    return {f"{proto}_{part}": [] for proto in protocols for part in ("train", "val")}


def _stream_into(writer, report: dict[str, Any], todo: list[Path], opts: dict) -> dict:
    """Parse `todo` and add each sample to `writer` as it comes; records failures in
    `report`. Returns the splits. Memory: one parsed file at a time plus names and counts."""
    split = _empty_splits(report["dataset"])
    frames, over, found = [], 0, {"rgb": 0, "depth": 0}
    denoise, denoised = dict.fromkeys(COUNTERS, 0), 0
    desc = f"parse {report['dataset']}"
    copies: dict[str, list[str]] = {}  # a sample's later copies, tried where the first fails
    for dup in report["duplicates"]:
        copies.setdefault(str(parse_name(dup)), []).append(dup)
    parsed = _parse_all(todo, opts["workers"], opts["max_bodies"], desc)
    for path, (name, sample, reason) in zip(todo, parsed, strict=True):
        for copy in copies.get(name, []) if sample is None else []:
            _, sample, _ = _parse_sample((copy, opts["max_bodies"]))
            if sample is not None:
                report["replaced"][name] = f"{path} failed ({reason}); its copy {copy} used"
                break
        if sample is None:  # named by its path where the folder holds copies of it
            report["failures"][name] = f"{path}: {reason}" if name in copies else reason
            continue
        sample["modalities"] = _modalities(name, opts["rgb"], opts["depth"])
        for kind in found:
            found[kind] += kind in sample["modalities"]
        writer.add(sample)
        for proto, part in split_of(name, report["dataset"]).items():
            split[f"{proto}_{part}"].append(name)
        frames.append(sample["total_frames"])
        over += sample["num_bodies"] > opts["max_bodies"]
        for k in COUNTERS:
            denoise[k] += sample["denoise"][k]
        denoised += any(sample["denoise"].values())
    report["failed"] = len(report["failures"])
    if not frames:
        first = next(iter(report["failures"].items()), None)
        why = f"; the first failure, {first[0]}: {first[1]}" if first else ""
        raise ValueError(
            f"no usable {report['dataset']} skeleton among the {report['files_found']} files "
            f"under {report['source']} ({report['skipped_missing']} official missing, "
            f"{report['failed']} failed, {report['outside_dataset']} outside {report['dataset']})"
            f"{why}"
        )
    frames = np.asarray(frames)
    report.update(
        samples=len(frames), splits={k: len(v) for k, v in split.items()},
        frames={"min": int(frames.min()), "max": int(frames.max()), "mean": float(frames.mean())},
        over_max_bodies=int(over), max_bodies=opts["max_bodies"], workers=opts["workers"],
        denoise=denoise, denoised_samples=denoised,
        modalities={k: v for k, v in found.items() if opts[k] is not None},
    )  # fmt: skip
    return split


def prepare_ntu(
    skeletons: str | os.PathLike,
    out: str | os.PathLike,
    dataset: str = "ntu60",
    workers: int = 1,
    max_bodies: int = 2,
    rgb: str | os.PathLike | None = None,
    depth: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Parse every NTU .skeleton file under `skeletons` into the annotation file `out`.

    Keeps the files of `dataset` ("ntu60": S001-S017, A001-A060; "ntu120": all), skips the
    official missing-skeleton samples, parses with `workers` processes, records bad files with
    their reason, writes `out` (splits xsub/xview or xsub/xset, train/val) and
    `<out>.report.json` (as `skelact convert`: ntu60.store.report.json, so a store and a pickle
    of one name keep their own), prints a summary and returns the report. `out` is a skelact
    store (a folder), written while parsing; a name ending in .pkl gets a pyskl pickle.
    """
    _check_dataset(dataset)
    if workers < 1 or max_bodies < 1:
        raise ValueError(f"workers and max_bodies must be >= 1, got {workers} and {max_bodies}")
    for flag, folder in (("--rgb", rgb), ("--depth", depth)):  # a typo found no file, silently
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"prepare ntu {flag} {folder}: no such folder")
    start, root, out = time.perf_counter(), Path(skeletons), Path(out)
    files = _find_skeletons(root)
    report: dict[str, Any] = {
        "dataset": dataset, "source": str(root), "output": str(out), "files_found": len(files),
        "outside_dataset": 0, "unrecognised_names": [], "duplicates": [],
        "skipped_missing": 0, "skipped_missing_names": [], "failed": 0, "failures": {},
        "replaced": {},
    }  # fmt: skip
    todo = _select_files(files, dataset, report)
    opts = {"workers": workers, "max_bodies": max_bodies, "rgb": Path(rgb) if rgb else None,
            "depth": Path(depth) if depth else None}  # fmt: skip
    with StoreWriter(out) as writer:
        split = _stream_into(writer, report, todo, opts)
        report["seconds"] = round(time.perf_counter() - start, 2)
        writer.close(split, layout="ntu25", dataset=dataset, classes=ntu_classes(dataset),
                     report=report)  # fmt: skip
    report_path = write_report(out, report)
    print(_summary(report, out, report_path))
    return report


def _summary(report: dict[str, Any], out: Path, report_path: Path) -> str:
    r = report
    lines = [
        f"NTU {r['dataset']}: {r['samples']} samples from {r['files_found']} .skeleton files "
        f"in {r['seconds']:.1f} s ({r['workers']} worker(s))",
        f"  skipped: {r['skipped_missing']} official missing-skeleton samples, "
        f"{r['outside_dataset']} outside {r['dataset']}, {len(r['unrecognised_names'])} "
        f"unrecognised names, {len(r['duplicates'])} duplicates",
        "  splits: " + " | ".join(f"{k} {v}" for k, v in r["splits"].items()),
        f"  bodies: {r['denoised_samples']} samples denoised: "
        + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in r["denoise"].items())
        + f" (rules: skelact.data.sources.ntu_bodies); {r['over_max_bodies']} with more "
        f"than {r['max_bodies']} bodies ({r['max_bodies']} kept)",
        f"  failed: {r['failed']}",
    ]
    if r["modalities"]:
        lines.append("  with a file found: " + ", ".join(
            f"{k} {v} of {r['samples']}" for k, v in r["modalities"].items()))  # fmt: skip
    empty = [k for k, v in r["splits"].items() if not v]
    if empty:
        lines.insert(3, f"  warning: empty split(s) {', '.join(empty)}: no file of this folder "
                     "belongs there; training on them will be refused")  # fmt: skip
    for name, reason in list(r["failures"].items())[:10]:
        lines.append(f"    {name}: {reason}")
    for name, what in r["replaced"].items():
        lines.append(f"  {name}: {what}")
    if r["failed"] > 10:
        lines.append(f"    ... and {r['failed'] - 10} more (see {report_path})")
    size = disk_size(out) / 2**20
    lines.append(f"  wrote {out} ({size:.1f} MiB) and {report_path}")
    return "\n".join(lines)
