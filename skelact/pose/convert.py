"""Many videos -> one annotation file (`skelact convert`).

Inputs are files or folders (searched recursively for video extensions). A video that fails
(missing, not a video, no frames, no person) is skipped and listed with its reason in the
report `<out>.report.json`; the rest are written. Rerunning with the same `out` keeps the
samples already there and converts only the new videos (failed ones are retried).

Labels: with `labels_from_folders`, `videos/<class>/<clip>.mp4` gets the class of its parent
folder; classes are sorted by name, stored as "classes", and the splits "train" / "test" hold
every fifth clip of each class (by name) in "test". Without it every sample has label 0 and
"classes" is ["unknown"]. The split "all" always lists every sample.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from skelact.data.formats.annotations import load_annotations, save_annotations
from skelact.data.prep.sampling import present
from skelact.files import write_report
from skelact.layouts import POSE_LAYOUTS
from skelact.pose.extract import extract_video
from skelact.pose.model import ensure_pose_model

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
TEST_EVERY = 5  # with labels from folders: every fifth clip of a class goes to "test"


class ConvertError(RuntimeError):
    """No video could be converted; the message points at the report."""


def collect_videos(
    inputs: Iterable[str | os.PathLike], taken: Iterable[str] = ()
) -> list[tuple[Path, str, str]]:
    """(video path, sample name, path under its input) for every input file and every video
    under input folders.

    Files are taken whatever their extension (a bad one fails later, with a reason); a name is
    the path relative to its input folder without extension ("walk/clip01"), or a file's stem;
    the path under its input keeps the extension ("walk/clip01.mp4", or the file's name).
    Names are unique and avoid `taken` (e.g. the names already in the output file): a clash
    gets the first free suffix "_2", "_3", ...
    """
    found: list[tuple[Path, str]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            videos = sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
            found += [(p, p.relative_to(item).as_posix()) for p in videos]
        else:
            found.append((item, item.name))
    used = set(taken)
    unique = []
    for path, rel in found:  # two inputs may give the same name: number the later ones
        name = new = rel[: -len(path.suffix)] if path.suffix else rel
        k = 1
        while new in used:
            k += 1
            new = f"{name}_{k}"
        used.add(new)
        unique.append((path, new, rel))
    return unique


def convert_videos(
    inputs: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    layout: str = "mediapipe33",
    max_people: int = 1,
    workers: int = 1,
    labels_from_folders: bool = False,
    pose_model: str | os.PathLike | None = None,
    progress: bool = True,
    mirrored: bool = False,
) -> dict[str, Any]:
    """Convert videos (files, or folders searched recursively) to the annotation file `out`
    (a skelact store; a pyskl pickle when `out` ends in .pkl).

    Each sample: "keypoint" (M, T, V, 3) metres in camera space (y up, hip-centred), plus
    "keypoint_2d" (M, T, V, 2), "keypoint_score" (M, T, V), "mask" (M, T), "color_box" (M, T, 4)
    each person's image box in pixels, "img_shape", "fps", "video" (absolute path) and
    "rgb_path" (the path under the folder holding every input, `video_root`: the `--root` of
    `prepare features --modality rgb`); V = 33 ("mediapipe33") or 25 ("ntu25"), M <= max_people.
    `workers` > 1 converts videos in that many processes. `pose_model`: a .task bundle, else
    `ensure_pose_model()` finds one. Returns the report (also written next to `out` as
    `<out>.report.json` and stored under the file's "report"); raises ConvertError when no
    video at all could be converted. `mirrored`: the videos are mirror images (NTU's RGB
    videos are): x flips and left/right joints swap (see `skelact.pose.extract`).
    """
    if layout not in POSE_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {POSE_LAYOUTS}")
    if max_people < 1 or workers < 1:
        raise ValueError(f"max_people and workers must be >= 1, got {max_people}, {workers}")
    out = Path(out)
    model = ensure_pose_model(pose_model)
    existing = _load_existing(out, layout, mirrored)
    inputs = list(inputs)
    videos = collect_videos(inputs, taken={a["frame_dir"] for a in existing})
    if not videos and not existing:
        raise ConvertError(
            f"no video in {', '.join(map(str, inputs))}: give video files, or folders holding "
            f"them (searched recursively for {' '.join(VIDEO_EXTENSIONS)})"
        )
    done = {a.get("video") for a in existing}
    todo = [(p, n) for p, n, _ in videos if str(p.absolute()) not in done]
    anns, failed = _run(todo, model, (layout, max_people, mirrored), workers, progress)
    anns = existing + anns
    root = video_root(inputs, [a["video"] for a in existing if a.get("video")])
    for ann in anns:  # every video by its path under the one root, earlier samples' too
        if ann.get("video"):
            ann["rgb_path"] = Path(os.path.relpath(ann["video"], root)).as_posix()
    report = {
        "out": str(out),
        "video_root": str(root),
        "videos": len(videos),
        "converted": len(anns) - len(existing),
        "skipped_existing": len(videos) - len(todo),
        "failed": failed,
        "layout": layout,
        "mirrored": mirrored,
        "pose_model": str(model),
        "frames": sum(a["total_frames"] for a in anns),
        "person_frames": int(sum(_present(a).any(0).sum() for a in anns)),
    }
    report["detection_rate"] = round(report["person_frames"] / max(report["frames"], 1), 4)
    report_path = write_report(out, report)
    if not anns:
        _print_failures(report)  # each reason on the terminal, not only in the report
        raise ConvertError(f"no video could be converted; reasons in {report_path}")
    data = _assemble(anns, layout, labels_from_folders, report)
    save_annotations(data, out)
    if progress:
        _print_summary(report, report_path)
    if labels_from_folders:
        _warn_splits(data)
    return report


def video_root(inputs: list, earlier: list[str]) -> Path:
    """The folder every video is under: the input folder (a file's own folder), or the
    deepest folder holding all the inputs and the `earlier` videos of the file added to. Each
    sample's "rgb_path" is its video's path under it: `prepare features --root` takes it, so
    clips of one name in two input folders (walk/clip1.mp4, run/clip1.mp4) stay apart."""
    dirs = [p if p.is_dir() else p.parent for p in (Path(i).absolute() for i in inputs)]
    return Path(os.path.commonpath(dirs + [Path(v).parent for v in earlier]))


def _warn_splits(data: dict[str, Any]) -> None:
    """Say so when --labels-from-folders made one class only, or no test clip: training
    would then be refused or mean nothing."""
    classes, split = data["classes"], data["split"]
    if len(classes) < 2:
        print(
            f"warning: one class only ({classes[0]!r}): --labels-from-folders takes each "
            "video's folder as its class; put the videos in one sub-folder per class"
        )
    if not split["test"]:
        print(
            f"warning: no test clip: every {TEST_EVERY}th clip of a class goes to 'test', "
            f"and no class has {TEST_EVERY}; give more clips, or your own splits"
        )


def _present(ann: dict) -> np.ndarray:
    """(M, T) bool: a body is there (the "mask", or any non-zero joint in older files)."""
    return ann["mask"] if "mask" in ann else present(ann["keypoint"])


def _print_summary(report: dict[str, Any], report_path: Path) -> None:
    print(
        f"{report['out']}: {report['converted']} video(s) converted, "
        f"{report['skipped_existing']} already there, {len(report['failed'])} failed; "
        f"person found in {report['person_frames']}/{report['frames']} frames "
        f"({100 * report['detection_rate']:.1f}%)"
    )
    _print_failures(report)
    print(f"report: {report_path}")
    print(f"videos under {report['video_root']} (prepare features --modality rgb takes it as "
          "--root, the default for this file)")  # fmt: skip


def _print_failures(report: dict[str, Any]) -> None:
    for item in report["failed"]:
        print(f"  skipped {item['video']}: {item['reason']}")


def _load_existing(out: Path, layout: str, mirrored: bool) -> list[dict]:
    """The samples an earlier convert wrote to `out`, to add to; refuses a file of another
    layout, or of videos read with the other --mirrored setting (one file, one convention)."""
    if not out.exists():
        return []
    data = load_annotations(out)  # a store's arrays stay memory-mapped, not copied
    if data.get("layout") != layout:
        raise ValueError(
            f"{out} holds layout {data.get('layout')!r}, not {layout!r}: choose another --out"
        )
    was = (data.get("report") or {}).get("mirrored")
    if was is not None and bool(was) != mirrored:
        raise ValueError(
            f"{out} holds videos converted {'with' if was else 'without'} --mirrored: convert "
            f"these {'with' if was else 'without'} it too, or choose another --out"
        )
    return list(data["annotations"])


def _one(job: tuple, on_frame=None) -> tuple[dict | None, str | None]:
    """One video -> (sample, None) or (None, reason); `job` = (path, name, model, layout, M,
    mirrored)."""
    path, name, model, layout, max_people, mirrored = job
    try:
        sample = extract_video(path, model, max_people, layout, on_frame, mirrored)
    except Exception as err:  # noqa: BLE001 - any failure skips this video with its reason
        return None, f"{type(err).__name__}: {err}"
    sample["frame_dir"], sample["video"] = name, str(path.absolute())
    return sample, None


def _run(todo, model, how, workers, progress) -> tuple[list[dict], list[dict]]:
    """Convert `todo` [(path, name)] with `how` = (layout, max people, mirrored); progress
    bars over videos and (estimated) frames."""
    counts = {p: frame_count(p) for p, _ in todo}  # header counts, for the frame bar only
    vbar = tqdm(total=len(todo), desc="videos", unit="video", disable=not progress)
    fbar = tqdm(total=sum(counts.values()), desc="frames", unit="frame", disable=not progress)
    anns, failed = [], []

    def record(path: Path, result: tuple[dict | None, str | None]) -> None:
        sample, reason = result
        if sample is None:
            failed.append({"video": str(path), "reason": reason})
        else:
            anns.append(sample)
        vbar.update(1)

    jobs = [(p, n, model, *how) for p, n in todo]
    if workers <= 1:
        for job in jobs:
            frames_before = fbar.n
            record(job[0], _one(job, on_frame=lambda: fbar.update(1)))
            fbar.update(max(0, counts[job[0]] - (fbar.n - frames_before)))  # failed early
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding MediaPipe
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_one, job): job[0] for job in jobs}
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except Exception as err:  # noqa: BLE001 - a crashed worker fails its videos only
                    result = None, f"worker process failed: {type(err).__name__}: {err}"
                record(futures[fut], result)
                fbar.update(counts[futures[fut]])
    vbar.close()
    fbar.close()
    order = {n: i for i, (_, n) in enumerate(todo)}
    anns.sort(key=lambda a: order[a["frame_dir"]])
    return anns, failed


def frame_count(path: Path) -> int:
    """The header's frame count (0 when unknown or unreadable): only for progress bars."""
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return max(n, 0)


def _assemble(anns: list[dict], layout: str, from_folders: bool, report: dict) -> dict[str, Any]:
    """The annotation dict: labels, class table and splits."""
    names = [a["frame_dir"] for a in anns]
    split = {"all": names}
    if from_folders:
        for a in anns:
            a["class_name"] = Path(a["video"]).parent.name
        classes = sorted({a["class_name"] for a in anns})
        split.update(train=[], test=[])
        seen: dict[str, int] = {}
        for a in sorted(anns, key=lambda a: a["frame_dir"]):
            a["label"] = classes.index(a["class_name"])
            k = seen[a["class_name"]] = seen.get(a["class_name"], 0) + 1
            split["test" if k % TEST_EVERY == 0 else "train"].append(a["frame_dir"])
    else:
        classes = ["unknown"]
        for a in anns:
            a["label"] = 0
    return {
        "split": split,
        "annotations": anns,
        "layout": layout,
        "classes": classes,
        "dataset": "videos",
        "report": report,
    }
