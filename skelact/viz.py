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
    xlabel = "frame" if times is None else "time (s)"
    return plot_attention_rows([(title, weights, x)], path, xlabel)


def plot_attention_rows(rows: list[tuple], path: str | Path, xlabel: str = "time (s)") -> Path:
    """One bar chart of attention weights a row, sharing the x axis: rows [(title, weights
    (T,), x (T,))], e.g. one row per person of a video."""
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 0.4 + 2.1 * len(rows)), sharex=True,
                             squeeze=False)  # fmt: skip
    for ax, (title, weights, x) in zip(axes[:, 0], rows, strict=True):
        ax.bar(x, weights, width=(x[1] - x[0]) * 0.9 if len(x) > 1 else 0.8)
        ax.set_ylabel("weight")
        ax.set_title(title)
    axes[-1, 0].set_xlabel(xlabel)
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


def render_video(
    video: str | Path,
    sample: dict,
    layout,
    top: dict | None,
    out: str | Path,
    labels: dict[int, str] | None = None,
) -> Path:
    """Write `video` with the skeletons (from "keypoint_2d", normalised) drawn, and the clip's
    label `top` ({"name", "prob"}) in the corner or, per body m, `labels[m]` above its head."""
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
            if not writer.isOpened():
                cap.release()
                raise ValueError(f"{out}: OpenCV cannot write this video; name a .mp4 or .avi")
        for m in range(pts2d.shape[0]):
            if t < mask.shape[1] and mask[m, t]:
                xy = (pts2d[m, t] * (w, h)).astype(int)
                for a, b in bones:
                    cv2.line(frame, tuple(xy[a]), tuple(xy[b]), (0, 255, 0), max(2, w // 400))
                if labels and m in labels:
                    x0, y0 = xy[:, 0].min(), xy[:, 1].min()  # above the head
                    _label(frame, labels[m], int(x0), int(y0) - h // 40, h / 1000)
        if top is not None:
            _label(frame, f"{top['name']} ({top['prob']:.2f})", 20, 20, h / 700, top=True)
        writer.write(frame)
        t += 1
    cap.release()
    if writer is None:
        raise ValueError(f"video {video}: no frame could be decoded for rendering")
    writer.release()
    return Path(out)


def _label(frame, text: str, x: int, y: int, scale: float, top: bool = False) -> None:
    """Dark text on a white box whose top-left corner (top=True) or bottom-left is (x, y)."""
    import cv2

    h, w = frame.shape[:2]
    thick = max(2, h // 300)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x = min(max(x, 6), max(6, w - tw - 6))
    y = y + th if top else max(y, th + 6)
    cv2.rectangle(frame, (x - 6, y - th - 6), (x + tw + 6, y + base + 6), (255, 255, 255), -1)
    cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 200), thick)


def plot_training_curves(history: list[dict], path: str | Path) -> Path:
    """Loss, accuracy (train, and "val_top1" where measured) and learning rate per epoch."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    epochs = [r["epoch"] for r in history]
    axes[0].plot(epochs, [r["loss"] for r in history], "o-", ms=3, label="train")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [r["acc"] for r in history], "o-", ms=3, label="train")
    val = [(r["epoch"], r["val_top1"]) for r in history if r.get("val_top1") is not None]
    if val:
        axes[1].plot(*zip(*val, strict=True), "s-", ms=4, label="val top-1")
    axes[1].set_title("accuracy")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8)
    axes[2].plot(epochs, [r["lr"] for r in history], "o-", ms=3)
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)  # a viewer never sees a half-written image
    return Path(path)
