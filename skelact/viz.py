"""Plots: confusion matrix, temporal attention."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(
    cm: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix as a PNG; big matrices drop the cell numbers."""
    cm = np.asarray(cm, np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(class_names)
    size = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7 if n > 20 else 9)
    ax.set_yticks(range(n), class_names, fontsize=7 if n > 20 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(
                j,
                i,
                int(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_attention(
    weights: np.ndarray,
    path: str | Path,
    times: np.ndarray | None = None,
    title: str = "temporal attention",
) -> Path:
    """Attention weight per sampled frame (T,), optionally against their times in seconds."""
    x = np.arange(len(weights)) if times is None else times
    fig, ax = plt.subplots(figsize=(8, 2.5))
    ax.bar(x, weights, width=(x[1] - x[0]) * 0.9 if len(x) > 1 else 0.8)
    ax.set_xlabel("frame" if times is None else "time (s)")
    ax.set_ylabel("weight")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_timeline(rows: list[dict], path: str | Path) -> Path:
    """Sliding-window predictions: one coloured bar per window, its top-1 probability as height."""
    fig, ax = plt.subplots(figsize=(10, 3))
    names = sorted({r["name"] for r in rows})
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(names), 2)))
    for r in rows:
        c = colors[names.index(r["name"])]
        ax.bar(
            r["start"],
            r["prob"],
            width=r["end"] - r["start"],
            align="edge",
            color=c,
            alpha=0.6,
            edgecolor="k",
            linewidth=0.3,
        )
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i]) for i in range(len(names))]
    if names:
        ax.legend(handles, names, fontsize=7, loc="upper right")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("top-1 probability")
    ax.set_ylim(0, 1.05)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def render_video(video: str | Path, sample: dict, layout, top: dict, out: str | Path) -> Path:
    """Write `video` with the skeleton (from "keypoint_2d", normalised) and the label drawn."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    pts2d, mask = sample["keypoint_2d"], sample["mask"]
    bones = layout.bones()
    t = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for m in range(pts2d.shape[0]):
            if t < mask.shape[1] and mask[m, t]:
                xy = (pts2d[m, t] * (w, h)).astype(int)
                for a, b in bones:
                    cv2.line(frame, tuple(xy[a]), tuple(xy[b]), (0, 255, 0), max(2, w // 400))
        text = f"{top['name']} ({top['prob']:.2f})"
        scale, thick = h / 700, max(2, h // 300)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        x, y = 20, 20 + th
        cv2.rectangle(frame, (x - 6, y - th - 6), (x + tw + 6, y + base + 6), (255, 255, 255), -1)
        cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 200), thick)
        writer.write(frame)
        t += 1
    cap.release()
    if writer is None:
        raise ValueError(f"video {video}: no frame could be decoded for rendering")
    writer.release()
    return Path(out)
