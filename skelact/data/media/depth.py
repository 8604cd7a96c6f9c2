"""Depth frame loading: masked depth maps, cropped around the person and normalised.

Two sources, both millimetres with the background at 0:

- NTU's masked depth: one folder per sample, `SsssCcccPpppRrrrAaaa/MDepth-00000001.png`, ...
  (16-bit PNGs, 512x424).
- a MATLAB file of (H, W, T) maps (UTD-MHAD's `Depth/aA_sS_tT_depth.mat`, variable `d_depth`,
  240x320 uint16).

A clip becomes a (T, 1, size, size) float tensor in [0, 1], background exactly 0. The crop is
the square around the skeleton's depth-pixel joints ("depth_xy", NTU) or, without them, around
the foreground (the non-zero pixels: UTD-MHAD's skeletons are not in depth pixels). Depth is
scaled either over a fixed range ("fixed", 500-4500 mm, the Kinect v2 working range, which
keeps the distance to the camera comparable across samples) or around the person's median
depth ("person": nearer is brighter, so an arm in front of the body stands out).

The single channel goes to the backbone as a grey image (`skelact.models.backbones`).
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


def read_depth_mat(path: str | os.PathLike) -> np.ndarray:
    """A MATLAB file of depth maps (UTD-MHAD's `d_depth`, (H, W, T)) -> uint16 (T, H, W) mm.

    Takes the variable `d_depth`, else the file's only 3-D array."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # noqa: BLE001 - loadmat raises many types for a corrupt file
        raise OSError(f"depth file {path}: not a readable .mat file ({err!r})") from err
    arrays = {k: v for k, v in mat.items() if not k.startswith("__") and np.ndim(v) == 3}
    if "d_depth" not in arrays and len(arrays) != 1:
        raise OSError(
            f"depth file {path}: no d_depth variable and not exactly one 3-D array "
            f"(found {sorted(arrays) or 'none'})"
        )
    depth = arrays.get("d_depth", next(iter(arrays.values())))
    if depth.size == 0:
        raise OSError(f"depth file {path}: holds no frame (shape {depth.shape})")
    if not np.issubdtype(depth.dtype, np.number) or depth.min() < 0:
        raise OSError(f"depth file {path}: expected millimetres >= 0, got dtype {depth.dtype}")
    if not np.issubdtype(depth.dtype, np.integer) and not np.array_equal(depth, np.round(depth)):
        raise OSError(  # a cast would make 1.25 m into 1 mm
            f"depth file {path}: values of {depth.dtype} that are not whole millimetres (up to "
            f"{float(depth.max()):.3g}: metres?); save integer millimetres (MATLAB: uint16)"
        )
    return np.ascontiguousarray(depth.transpose(2, 0, 1)).astype(np.uint16)  # (T, H, W)


def open_depth(source: str | os.PathLike) -> tuple[int, Callable[[int], np.ndarray]]:
    """A depth source -> (frame count, read(i) -> uint16 (H, W) mm): a .mat file of (H, W, T)
    maps, or a folder of MDepth-%08d.png files (NTU's masked depth)."""
    source = Path(source)
    if source.suffix.lower() == ".mat":
        if not source.is_file():
            raise FileNotFoundError(f"depth file {source} does not exist")
        maps = read_depth_mat(source)
        if len(maps) == 0:
            raise OSError(f"depth file {source}: holds no frame")
        return len(maps), maps.__getitem__
    files = list_depth_frames(source)
    return len(files), lambda i: read_depth(files[i])


def foreground_box(
    frames: list[np.ndarray], margin: float = 0.15, spill: float = 0.002
) -> tuple[int, int, int, int]:
    """A square box (x0, y0, x1, y1) around the non-zero (person) pixels of `frames`.

    Masked depth has the background at 0, so the person is the foreground; the extreme
    `spill` fraction of its pixels on each side (stray noise) is ignored. The tight box grows
    by `margin` of its longer side on each side, then as `crop_box`. No foreground: centre.
    """
    h, w = frames[0].shape
    ys, xs = np.nonzero(np.stack(frames).max(0))
    if len(xs) == 0:
        return crop_box(None, [0], w, h, margin=margin)
    lo, hi = 100 * spill, 100 * (1 - spill)
    (x0, x1), (y0, y1) = np.percentile(xs, [lo, hi]), np.percentile(ys, [lo, hi])
    corners = np.array([[[[x0, y0], [x1 + 1, y1 + 1]]]])  # (M=1, T=1, V=2, 2); pixel ends
    return crop_box(corners, [0], w, h, margin=margin)


def person_relative(mm: np.ndarray, reference: float, near: float = 600, far: float = 300):
    """Millimetres -> float32 in [0, 1] around the person's depth `reference`: from
    reference + far (0.1) to reference - near (1.0), clipped; nearer is brighter and the
    background (0) stays 0, so an arm in front of the body stands out from the torso."""
    out = 0.1 + 0.9 * np.clip((reference + far - mm.astype(np.float32)) / (near + far), 0, 1)
    out[mm == 0] = 0.0
    return out


def load_depth_clip(
    source: str | os.PathLike,
    num_frames: int,
    xy: np.ndarray | None = None,
    size: int = 224,
    train: bool = False,
    rng: np.random.Generator | None = None,
    depth_range: tuple[float, float] = (500, 4500),
    margin: float = 0.15,
    norm: str = "fixed",
) -> torch.Tensor:
    """Sample `num_frames` depth frames, crop the person, resize -> float (T, 1, size, size).

    source: a folder of MDepth PNGs or a .mat of (H, W, T) maps (`open_depth`). xy: (M, T, V, 2)
    depthX/depthY joint positions (an annotation's "depth_xy"); without it the crop is the box
    around the foreground (non-zero pixels) of the sampled frames. norm: "fixed" maps
    `depth_range` to [0, 1] (`normalise_depth`); "person" maps depth around the clip's median
    foreground depth (`person_relative`). Resizing uses nearest neighbour: interpolating would
    invent depths between the person and the zero background at the silhouette's edge.
    """
    if norm not in ("fixed", "person"):
        raise ValueError(f"depth norm must be 'fixed' or 'person', got {norm!r}")
    total, read = open_depth(source)
    inds = sample_indices(total, num_frames, train, rng)
    frames = {}
    for i in dict.fromkeys(inds.tolist()):
        frames[i] = read(i)
        if frames[i].shape != frames[inds[0]].shape:
            raise OSError(
                f"depth {source}: frame {i} has size {frames[i].shape}, not {frames[inds[0]].shape}"
            )
    h, w = frames[inds[0]].shape
    if xy is not None:
        x0, y0, x1, y1 = crop_box(xy, inds, w, h, margin=margin, total=total)
    else:
        x0, y0, x1, y1 = foreground_box(list(frames.values()), margin)
    patches = {i: f[y0:y1, x0:x1] for i, f in frames.items()}
    if norm == "person":
        fg = np.concatenate([p[p > 0] for p in patches.values()])
        ref = float(np.median(fg)) if len(fg) else 0.0
        scale = lambda mm: person_relative(mm, ref)  # noqa: E731
    else:
        scale = lambda mm: normalise_depth(mm, depth_range)  # noqa: E731
    resized = {
        i: cv2.resize(scale(p), (size, size), interpolation=cv2.INTER_NEAREST)
        for i, p in patches.items()
    }
    out = np.stack([resized[i] for i in inds.tolist()])  # short clips repeat frames
    return torch.from_numpy(out).unsqueeze(1)  # (T, 1, S, S)
