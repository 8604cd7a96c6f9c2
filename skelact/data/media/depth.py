"""Depth frame loading: depth maps in millimetres, cropped around the person and normalised.

Two source forms: a folder of 16-bit PNGs, one per frame (NTU ships one per sample,
`nturgb+d_depth_masked/SsssCcccPpppRrrrAaaa/MDepth-00000001.png`, ..., 512x424, background 0;
any other names are ordered naturally), or a MATLAB .mat holding one (H, W, T) array
(UTD-MHAD's `Depth/aA_sS_tT_depth.mat`, `d_depth`, 240x320).
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
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from skelact.data.media.video import crop_box
from skelact.data.prep.sampling import sample_indices

_NAME = re.compile(r"MDepth-(\d{8})\.png$")
_NUMBER = re.compile(r"(\d+)")


def list_depth_frames(sample_dir: str | os.PathLike) -> list[Path]:
    """The sample's depth PNGs in frame order: NTU's MDepth-%08d.png files by number if the
    folder has any, else every *.png by name with digit runs compared as numbers (frame2.png
    before frame10.png)."""
    sample_dir = Path(sample_dir)
    if not sample_dir.is_dir():
        raise FileNotFoundError(f"depth folder {sample_dir} does not exist")
    pngs = [p for p in sample_dir.iterdir() if p.suffix.lower() == ".png"]
    ntu = sorted((int(m.group(1)), p) for p in pngs if (m := _NAME.match(p.name)))
    if ntu:
        return [p for _, p in ntu]
    if not pngs:
        raise FileNotFoundError(f"depth folder {sample_dir}: no .png file in it")
    return sorted(pngs, key=_natural_key)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in _NUMBER.split(path.name)]


def read_depth_mat(path: str | os.PathLike) -> np.ndarray:
    """A MATLAB file holding one (H, W, T) depth array (UTD-MHAD's `d_depth`, millimetres) ->
    (T, H, W) uint16."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        arrays = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    except (MatReadError, ValueError, NotImplementedError, OSError) as err:  # v7.3 is HDF5
        raise OSError(f"depth file {path}: not a readable MATLAB (v4-v7.2) file: {err}") from None
    cubes = {k: v for k, v in arrays.items() if getattr(v, "ndim", 0) == 3}
    if len(cubes) != 1:
        raise OSError(
            f"depth file {path}: expected one (H, W, T) array, found "
            f"{ {k: getattr(v, 'shape', None) for k, v in arrays.items()} }"
        )
    (cube,) = cubes.values()
    if not np.issubdtype(cube.dtype, np.number):
        raise OSError(f"depth file {path}: the depth array has dtype {cube.dtype}")
    mm = np.clip(np.nan_to_num(cube), 0, 65535).astype(np.uint16)
    return np.ascontiguousarray(mm.transpose(2, 0, 1))  # (T, H, W)


def open_depth(source: str | os.PathLike) -> tuple[int, Callable[[int], np.ndarray]]:
    """A depth source -> (frame count, read(i) -> uint16 (H, W) mm): a .mat of (H, W, T) maps
    (read whole) or a folder of 16-bit PNGs (`list_depth_frames`, read one by one)."""
    source = Path(source)
    if source.suffix.lower() != ".mat":
        files = list_depth_frames(source)
        return len(files), lambda i: read_depth(files[i])
    if not source.is_file():
        raise FileNotFoundError(f"depth file {source} does not exist")
    maps = read_depth_mat(source)
    if len(maps) == 0:
        raise OSError(f"depth file {source}: holds no frame")
    return len(maps), maps.__getitem__


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

    sample_dir: a folder of 16-bit PNGs or a .mat of (H, W, T) (`open_depth`).

    xy: (M, T, V, 2) depthX/depthY joint positions (an annotation's "depth_xy") or None for a
    centre crop. Resizing uses nearest neighbour: interpolating would invent depths between the
    person and the zero background at the silhouette's edge.
    """
    total, read = open_depth(sample_dir)
    inds = sample_indices(total, num_frames, train, rng)
    first = read(inds[0])
    h, w = first.shape
    box = crop_box(xy, inds, w, h, margin=margin, total=total)
    x0, y0, x1, y1 = box
    out = np.empty((len(inds), size, size), dtype=np.float32)
    for k, i in enumerate(inds):
        if k > 0 and i == inds[k - 1]:  # short clips repeat frames
            out[k] = out[k - 1]
            continue
        mm = first if k == 0 else read(i)
        if mm.shape != (h, w):
            raise OSError(f"depth {sample_dir} frame {i}: size {mm.shape} differs from {(h, w)}")
        patch = normalise_depth(mm[y0:y1, x0:x1], depth_range)
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(out).unsqueeze(1)  # (T, 1, S, S)
