"""Where a sample's RGB and depth frames live, and the image points its crop goes around.

An annotation sample names its sources with optional keys (README "Your own RGB-D data"):
"rgb_path" (a video), "depth_path" (a folder of 16-bit PNGs or a .mat of (H, W, T)), each
absolute or relative to the root given to `prepare features` / `data.<stream>.root`; crops
come from "color_xy" / "depth_xy" joints or "color_box" / "depth_box" boxes. Without them, NTU's
file naming applies.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

XY_KEY = {"rgb": "color_xy", "depth": "depth_xy"}  # annotation field with the crop's joints


def source_path(sample: dict, modality: str, data_root: str | os.PathLike) -> Path:
    """Where a sample's frames live (see README "Your own RGB-D data").

    Its "rgb_path" / "depth_path" field if present (absolute, or relative to data_root): an RGB
    video; for depth a folder of 16-bit PNGs or a .mat of (H, W, T). Else by its name: RGB
    data_root/<frame_dir>_rgb.avi (NTU), or data_root/<frame_dir>.<video extension> (the path
    under the folder given to `skelact convert`); depth data_root/<frame_dir>/ (NTU's
    MDepth-%08d.png), or data_root/<frame_dir>.mat.
    """
    if modality not in ("rgb", "depth"):
        raise ValueError(f"modality must be 'rgb' or 'depth', got {modality!r}")
    own = sample.get(f"{modality}_path")
    if own:
        return Path(data_root) / own
    name, root = sample["frame_dir"], Path(data_root)
    if modality == "depth":
        mat = root / f"{name}.mat"
        return mat if not (root / name).is_dir() and mat.is_file() else root / name
    ntu = root / f"{name}_rgb.avi"
    if ntu.exists():
        return ntu
    from skelact.pose.convert import VIDEO_EXTENSIONS

    found = [
        p
        for p in sorted(root.glob(f"{glob.escape(name)}.*"))
        if p.suffix.lower() in VIDEO_EXTENSIONS
    ]
    return found[0] if found else ntu


def crop_points(sample: dict, modality: str) -> np.ndarray | None:
    """The image points a sample's frames are cropped around -> (M, T, P, 2) pixels, or None
    (centre crop).

    "color_xy" / "depth_xy" (M, T, V, 2): joint positions (NTU's colorX/colorY, depthX/depthY);
    else "color_box" / "depth_box" (M, T, 4): a box x0 y0 x1 y1 per person and frame (what
    `skelact convert` stores for RGB), used as its two corners. Zeros mark absent people.
    Stores converted before boxes were kept: their normalised "keypoint_2d" times "img_shape".
    """
    key = XY_KEY[modality]
    if sample.get(key) is not None:
        return np.asarray(sample[key])
    box = sample.get(key.replace("_xy", "_box"))
    if box is None:
        return _landmark_pixels(sample) if modality == "rgb" else None
    box = np.asarray(box, np.float32)
    if box.ndim != 3 or box.shape[-1] != 4:
        name = sample.get("frame_dir", "sample")
        raise ValueError(f"{name}: {key.replace('_xy', '_box')} must be (M, T, 4), got {box.shape}")
    return box.reshape(*box.shape[:2], 2, 2)  # (M, T, 2 corners, xy)


def _landmark_pixels(sample: dict) -> np.ndarray | None:
    """(M, T, V, 2) pixels from a converted sample's normalised "keypoint_2d", or None."""
    if sample.get("keypoint_2d") is None or sample.get("img_shape") is None:
        return None
    h, w = (int(v) for v in sample["img_shape"])
    return np.asarray(sample["keypoint_2d"], np.float32) * np.float32([w, h])
