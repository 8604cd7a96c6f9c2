"""Depth frame loading: NTU's masked depth maps, cropped around the person and normalised.

NTU ships one folder per sample, `nturgb+d_depth_masked/SsssCcccPpppRrrrAaaa/`, holding
`MDepth-00000001.png`, ... : 16-bit PNGs, 512x424, depth in millimetres, background 0.
A clip becomes a (T, 1, size, size) float tensor in [0, 1]: depth mapped linearly over a fixed
range (`depth_range`, default 500-4500 mm, the Kinect v2 working range) and clipped, background
kept at exactly 0. A fixed range (rather than per-clip min/max) keeps the distance to the camera
comparable across samples.

The single channel goes to `FrameResNet(in_channels=1)`, which treats it as a grey image:
replicated to RGB and ImageNet-normalised, folded into conv1's weights (`DepthConv1`), so the
pretrained conv1 and its BatchNorm see inputs of the scale they were trained on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import torch

from skelact.data.sampling import sample_indices
from skelact.data.video import crop_box

_NAME = re.compile(r"MDepth-(\d{8})\.png$")


def list_depth_frames(sample_dir: str | os.PathLike) -> list[Path]:
    """The sample's MDepth-%08d.png files, sorted by frame number."""
    sample_dir = Path(sample_dir)
    if not sample_dir.is_dir():
        raise FileNotFoundError(f"depth folder {sample_dir} does not exist")
    frames = sorted(
        (int(m.group(1)), p) for p in sample_dir.iterdir() if (m := _NAME.match(p.name))
    )
    if not frames:
        raise FileNotFoundError(f"depth folder {sample_dir}: no MDepth-%08d.png file in it")
    return [p for _, p in frames]


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """One 16-bit depth PNG -> uint16 (H, W) millimetres."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"depth frame {path}: not a readable image")
    if img.ndim != 2 or img.dtype != np.uint16:
        raise OSError(
            f"depth frame {path}: expected a single-channel 16-bit image, "
            f"got dtype {img.dtype} shape {img.shape}"
        )
    return img


def normalise_depth(mm: np.ndarray, depth_range: tuple[float, float] = (500, 4500)) -> np.ndarray:
    """Millimetres -> float32 in [0, 1] over `depth_range` (clipped); background (0) stays 0."""
    lo, hi = depth_range
    if not hi > lo:
        raise ValueError(f"depth_range must be (near, far) with far > near, got {depth_range}")
    out = np.clip((mm.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    out[mm == 0] = 0.0
    return out


def load_depth_clip(
    sample_dir: str | os.PathLike,
    num_frames: int,
    xy: np.ndarray | None = None,
    size: int = 224,
    train: bool = False,
    rng: np.random.Generator | None = None,
    depth_range: tuple[float, float] = (500, 4500),
    margin: float = 0.15,
) -> torch.Tensor:
    """Sample `num_frames` depth frames, crop the person, resize -> float (T, 1, size, size).

    xy: (M, T, V, 2) depthX/depthY joint positions (an annotation's "depth_xy") or None for a
    centre crop. Resizing uses nearest neighbour: interpolating would invent depths between the
    person and the zero background at the silhouette's edge.
    """
    files = list_depth_frames(sample_dir)
    inds = sample_indices(len(files), num_frames, train, rng)
    first = read_depth(files[inds[0]])
    h, w = first.shape
    box = crop_box(xy, inds, w, h, margin=margin, total=len(files))
    x0, y0, x1, y1 = box
    out = np.empty((len(inds), size, size), dtype=np.float32)
    for k, i in enumerate(inds):
        if k > 0 and i == inds[k - 1]:  # short clips repeat frames
            out[k] = out[k - 1]
            continue
        mm = first if k == 0 else read_depth(files[i])
        if mm.shape != (h, w):
            raise OSError(f"depth frame {files[i]}: size {mm.shape} differs from {(h, w)}")
        patch = normalise_depth(mm[y0:y1, x0:x1], depth_range)
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(out).unsqueeze(1)  # (T, 1, S, S)
