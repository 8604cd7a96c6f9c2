"""`skelact predict`: a video in, the action out, with the temporal attention that decided it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from skelact.data.datasets import skeleton_channels, skeleton_streams
from skelact.data.transforms import build_skeleton_pipeline
from skelact.engine import load_checkpoint
from skelact.layouts import get_layout
from skelact.models.recognizer import build_recognizer

log = logging.getLogger("skelact")
POSE_LAYOUTS = ("ntu25", "mediapipe33")  # layouts MediaPipe conversion can produce


class Predictor:
    """A skeleton-stream checkpoint ready to score skeleton samples of its own layout."""

    def __init__(self, ckpt_path: str | Path):
        ck = load_checkpoint(ckpt_path)
        self.cfg = OmegaConf.create(ck["config"])
        streams = list(self.cfg.modality.streams)
        kinds = skeleton_streams(self.cfg.data, streams)
        if list(kinds) != streams:
            raise SystemExit(
                f"{ckpt_path}: predict runs skeleton-stream models; this one uses "
                f"{'+'.join(streams)}"
            )
        self.layout = get_layout(ck["layout"])
        if self.layout.name not in POSE_LAYOUTS:
            raise SystemExit(
                f"{ckpt_path}: the model was trained on layout {self.layout.name!r};"
                f" videos convert to {' or '.join(POSE_LAYOUTS)} only"
            )
        self.spec = ck["specs"][streams[0]]
        self.classes = ck["classes"]
        self.model = build_recognizer(self.cfg.model, streams, ck["num_classes"], ck["specs"])
        self.model.load_state_dict(ck["model"])
        self.model.eval()
        # one pass computes every stream's channels; each stream takes its own
        union, self.channels = skeleton_channels(kinds, 3, self.layout.num_joints)
        self.pipeline = build_skeleton_pipeline(
            self.layout, self.cfg.data.skeleton, False, self.spec["num_bodies"], union
        )

    @torch.no_grad()
    def __call__(self, keypoint: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """keypoint (M, T, V, C) -> class probabilities (classes,), attention (T',) of the
        first test clip, and the input frame index of each attention weight (T',)."""
        res = self.pipeline({"keypoint": keypoint.astype(np.float32)})
        x = torch.from_numpy(res["keypoint"])  # (K, M, T, V, C_all): K clips as the batch
        out = self.model({name: x[..., idx] for name, idx in self.channels.items()})
        probs = torch.softmax(out["logits"], -1).mean(0).numpy()
        # several skeleton streams: their attention averaged (the same frames for each)
        attention = torch.stack([a[0] for a in out["attention"].values()]).mean(0).numpy()
        return probs, attention, res["trim_offset"] + res["frame_inds"][0]


def predict_video(
    video: str | Path,
    ckpt: str | Path,
    topk: int = 5,
    json_out=None,
    render=None,
    window: float | None = None,
    stride: float | None = None,
    pose_model=None,
) -> dict:
    """Convert `video` with MediaPipe in memory, classify it, print and optionally save."""
    from skelact.pose.extract import extract_video
    from skelact.pose.model import ensure_pose_model

    predictor = Predictor(ckpt)
    sample = extract_video(
        video,
        ensure_pose_model(pose_model),
        predictor.spec["num_bodies"],
        layout=predictor.layout.name,
    )
    probs, attention, frames = predictor(sample["keypoint"])
    fps = float(sample["fps"]) or 30.0
    order = np.argsort(-probs)[:topk]
    result = {
        "video": str(video),
        "checkpoint": str(ckpt),
        "fps": fps,
        "frames": int(sample["total_frames"]),
        "frames_with_person": int(sample["mask"].any(0).sum()),
        "top": [
            {"label": int(i), "name": predictor.classes[i], "prob": float(probs[i])} for i in order
        ],
        "attention": {
            "frame": frames.tolist(),
            "time_s": (frames / fps).round(3).tolist(),
            "weight": attention.round(5).tolist(),
        },
    }
    print(f"{video}: {result['frames']} frames, person in {result['frames_with_person']}")
    for rank, top in enumerate(result["top"], 1):
        print(f"  {rank}. {top['name']:<40} {top['prob']:.3f}")
    if window:
        result["timeline"] = sliding_windows(
            predictor, sample, window, stride or window / 2, fps, Path(json_out or render or video)
        )
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))
    if render:
        from skelact.viz import plot_attention, render_video

        render_video(video, sample, predictor.layout, result["top"][0], render)
        plot = plot_attention(
            attention,
            Path(render).with_suffix(".attention.png"),
            times=frames / fps,
            title=f"attention: {result['top'][0]['name']}",
        )
        print(f"rendered {render} and {plot}")
    return result


def sliding_windows(
    predictor: Predictor, sample: dict, window: float, stride: float, fps: float, stem: Path
) -> list[dict]:
    """Top-1 per window of `window` seconds every `stride` seconds; writes CSV and plot."""
    from skelact.viz import plot_timeline

    kp, total = sample["keypoint"], sample["total_frames"]
    w, s = max(1, round(window * fps)), max(1, round(stride * fps))
    rows = []
    for start in range(0, max(total - w, 0) + 1, s):
        chunk = kp[:, start : start + w]
        if not np.abs(chunk).any():
            continue  # nobody in view
        probs, _, _ = predictor(chunk)
        top = int(probs.argmax())
        rows.append(
            {
                "start": round(start / fps, 3),
                "end": round(min(start + w, total) / fps, 3),
                "label": top,
                "name": predictor.classes[top],
                "prob": float(probs[top]),
            }
        )
    csv = stem.with_suffix(".timeline.csv")
    pd.DataFrame(rows, columns=["start", "end", "label", "name", "prob"]).to_csv(csv, index=False)
    plot_timeline(rows, stem.with_suffix(".timeline.png"))
    print(f"timeline: {len(rows)} windows -> {csv}")
    return rows
