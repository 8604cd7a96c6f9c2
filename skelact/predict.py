"""`skelact predict`: a video in, the action out, with the temporal attention that decided it.

A model fused with cached RGB features (`--modality rgb+skeleton`) gets them computed from the
video on the fly, with the checkpoint's feature settings (`Model.features`).

Built on the Python API (`skelact.api`). A two-person model sees the whole scene (the two
most active bodies, most active first, as in training). A one-person model with
`max_people` > 1 labels every tracked person on their own: one JSON entry per track, the
label drawn next to each skeleton.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from skelact.api import Model, Result, load
from skelact.live import Update, timeline_path

log = logging.getLogger("skelact")


def _entry(res: Result, fps: float, topk: int) -> dict:
    return {
        "top": [{"label": i, "name": n, "prob": p} for i, n, p in res.topk(topk)],
        "attention": {
            "frame": res.frames.tolist(),
            "time_s": (res.frames / fps).round(3).tolist(),
            "weight": res.attention.round(5).tolist(),
        },
    }


def predict_video(
    video: str | Path,
    ckpt: str | Path,
    topk: int = 5,
    json_out=None,
    render=None,
    window: float | None = None,
    stride: float | None = None,
    pose_model=None,
    max_people: int = 1,
    mirrored: bool = False,
) -> dict:
    """Convert `video` with MediaPipe in memory, classify it, print and optionally save."""
    check_outputs(json_out, render, window and Path(json_out or render or video))
    model = load(ckpt, pose_model=pose_model)
    per_person = model.contract.num_bodies == 1 and max_people > 1
    if max_people > 1 and not per_person:
        log.info("%s: a %d-person model sees the whole scene", ckpt, model.contract.num_bodies)
    sample = model.convert(video, max_people if per_person else None, mirrored, progress=True)
    fps = float(sample["fps"]) or 30.0
    if per_person:
        people = model.predict_people(sample)
    else:  # a fused model's RGB features are computed from the video here (`Model.features`)
        feats = model.features(sample) if model.contract.frames else None
        people = [(None, model.predict(sample, feats))]
    result = {
        "video": str(video),
        "checkpoint": str(ckpt),
        "fps": fps,
        "frames": int(sample["total_frames"]),
        "frames_with_person": int(sample["mask"].any(0).sum()),
        **_entry(people[0][1], fps, topk),  # per person: the first track's, as before
    }
    print(f"{video}: {result['frames']} frames, person in {result['frames_with_person']}")
    if per_person:
        result["people"] = [
            {"track": m, "frames": int(sample["mask"][m].sum()), **_entry(r, fps, topk)}
            for m, r in people
        ]
    for m, res in people:
        if m is not None:
            print(f" person {m} ({int(sample['mask'][m].sum())} frames):")
        for rank, (_, name, prob) in enumerate(res.topk(topk), 1):
            print(f"  {rank}. {name:<40} {prob:.3f}")
    if window:
        stem = Path(json_out or render or video)
        tracks = [m for m, _ in people] if per_person else [None]
        result["timeline"] = sliding_windows(
            model, sample, window, stride or window / 2, fps, stem, tracks
        )
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))
    if render:
        _render(video, sample, model, people, render, fps)
    return result


def check_outputs(json_out, render, timeline) -> None:
    """Refuse, before the pose pass, an output path that cannot be written: a folder, a file
    in a folder that is not there (made where it can be), a video OpenCV cannot write."""
    import cv2

    paths = [Path(p) for p in (json_out, render) if p]
    if timeline:
        paths.append(Path(timeline).with_suffix(".timeline.csv"))
    for path in paths:
        if path.is_dir():
            raise ValueError(f"{path} is a folder: give a file name")
        path.parent.mkdir(parents=True, exist_ok=True)
    if render:
        existed = Path(render).exists()
        writer = cv2.VideoWriter(str(render), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 64))
        ok = writer.isOpened()
        writer.release()
        if not existed:  # the probe's file: no video is left if the pose pass then fails
            Path(render).unlink(missing_ok=True)
        if not ok:
            raise ValueError(f"--render {render}: OpenCV cannot write a video of this kind; "
                             "name a .mp4 or .avi file")  # fmt: skip


def _render(video, sample: dict, model: Model, people, render, fps: float) -> None:
    from skelact.layouts import get_layout
    from skelact.viz import plot_attention_rows, render_video

    layout = get_layout(model.contract.layout)
    if people[0][0] is None:
        res = people[0][1]
        render_video(video, sample, layout, {"name": res.name, "prob": res.prob}, render)
    else:
        labels = {m: f"{m}: {r.name} ({r.prob:.2f})" for m, r in people}
        render_video(video, sample, layout, None, render, labels)
    rows = [  # one row per person (several with --max-people)
        (f"{'' if m is None else f'person {m}, '}attention: {r.name}", r.attention, r.frames / fps)
        for m, r in people
    ]
    plot = plot_attention_rows(rows, Path(render).with_suffix(".attention.png"))
    print(f"rendered {render} and {plot}")


def sliding_windows(
    model: Model,
    sample: dict,
    window: float,
    stride: float,
    fps: float,
    stem: Path,
    tracks: list[int | None] = (None,),
) -> list[dict]:
    """Top-1 per window of `window` seconds every `stride` seconds, and a last one that ends
    with the video (per track when `tracks` name bodies; None: the whole scene); writes CSV
    and plot."""
    from tqdm import tqdm

    from skelact.viz import plot_timeline

    total = sample["total_frames"]
    w, s = max(1, round(window * fps)), max(1, round(stride * fps))
    starts = list(range(0, max(total - w, 0) + 1, s))
    if starts[-1] + w < total:  # a last window that ends with the video
        starts.append(total - w)
    rows = []
    bar = tqdm(total=len(starts) * len(tracks), desc="windows", unit="window", disable=None,
               leave=False)  # fmt: skip
    for track in tracks:
        kp = sample["keypoint"] if track is None else sample["keypoint"][track : track + 1]
        for start in starts:
            bar.update()
            chunk = kp[:, start : start + w]
            if not np.abs(chunk).any():
                continue  # nobody in view
            feats = None
            if model.contract.frames:  # the window's own frames, cropped around the track
                feats = model.features(sample, track, span=(start, start + w))
            res = model.predict(chunk, feats)
            row = {"start": round(start / fps, 3), "end": round(min(start + w, total) / fps, 3)}
            if track is not None:
                row["track"] = track
            rows.append({**row, "label": res.label, "name": res.name, "prob": res.prob})
    bar.close()
    csv = stem.with_suffix(".timeline.csv")
    columns = ["start", "end", *(["track"] if tracks != [None] else []), "label", "name", "prob"]
    pd.DataFrame(rows, columns=columns).to_csv(csv, index=False)
    plot_timeline(rows, stem.with_suffix(".timeline.png"))
    print(f"timeline: {len(rows)} windows -> {csv}")
    return rows


def predict_live(
    source,
    ckpt,
    window: float = 2.0,
    every: float = 0.5,
    out: str | Path | None = None,
    mirrored: bool = False,
    pose_model=None,
    limit: float | None = None,
) -> dict:
    """Print an update every `every` s over the last `window` s of `source` until it ends,
    `limit` seconds of source time pass, or Ctrl-C; write the timeline CSV and summary (`out`,
    default `skelact.live.timeline_path`; the summary beside it as .json). An `out` that
    is a folder, or a .json (the summary's name), is refused before the stream starts."""
    if out is not None:
        if Path(out).suffix.lower() == ".json":
            raise ValueError(f"--out {out}: the timeline is a CSV (the summary is written beside "
                             "it as .json); name a .csv file")  # fmt: skip
        check_outputs(out, None, None)
    model = load(ckpt, pose_model=pose_model, threads=1)  # MediaPipe has the other cores
    live = model.stream(source, window=window, every=every, mirrored=mirrored)
    print(f"live: {source}, window {window}s, update every {every}s (Ctrl-C ends)")
    interrupted = []

    def on_ctrl_c(signum, frame):
        # installed explicitly: a process started with SIGINT ignored (a shell's background
        # job) gets no KeyboardInterrupt, and the run went on to the end of the source
        interrupted.append(signum)
        live.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_ctrl_c) if main else None
    try:
        for u in live:
            print(
                f"{u.time:7.2f}s  {u.name:<30} {u.prob:.2f}  pose {u.pose_ms:5.1f} ms  "
                f"model {u.model_ms:5.1f} ms  lag {u.lag_s:.2f}s  dropped {u.dropped}",
                flush=True,
            )
            if limit is not None and u.time >= limit:
                break
    except KeyboardInterrupt:
        interrupted.append(signal.SIGINT)
    finally:
        live.close()
        if main:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        print("stopped (Ctrl-C)")
    summary = live.summary()
    if not summary["updates"] and not interrupted:
        print(f"no update: the source ended before the first {window}s window filled")
    out = Path(out) if out else timeline_path(ckpt, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(live.timeline(), columns=list(Update.__dataclass_fields__)[:-1]).to_csv(
        out, index=False
    )
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    print(
        f"{summary['frames_processed']}/{summary['frames_read']} frames processed "
        f"({summary['frames_dropped']} dropped: pose extraction slower than the source), "
        f"{summary['processed_fps']:.2f} frames/s; timeline -> {out}"
    )
    return summary
