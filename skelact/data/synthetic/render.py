"""Render skeleton sequences as NTU-style RGB videos and masked depth maps (synthetic data).

People are drawn as filled limbs (thick lines with round caps) and a head disc, on a background
image, with an optional object held at a joint. Positions are given in pixels already (the
caller owns the projection, so the skeleton file's colorX/colorY/depthX/depthY point at exactly
what is drawn).

RGB draws its parts in a fixed order, ignoring depth: two motions that differ only along the
camera axis give the same pictures (what the fusion set's skeleton-only class pair relies on).
Depth draws far parts first (painter's algorithm), so nearer limbs cover farther ones, and
writes NTU's format: one 16-bit PNG per frame, millimetres, background 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

# NTU-25 limbs as (joint, joint, part); parts pick the colour and thickness. Drawn in this order.
LIMBS = (
    (0, 12, "legs"), (12, 13, "legs"), (13, 14, "legs"), (14, 15, "legs"),
    (0, 16, "legs"), (16, 17, "legs"), (17, 18, "legs"), (18, 19, "legs"),
    (0, 1, "torso"), (1, 20, "torso"), (20, 2, "torso"), (20, 4, "torso"), (20, 8, "torso"),
    (4, 5, "arms"), (5, 6, "arms"), (6, 7, "skin"), (7, 21, "skin"), (7, 22, "skin"),
    (8, 9, "arms"), (9, 10, "arms"), (10, 11, "skin"), (11, 23, "skin"), (11, 24, "skin"),
    (2, 3, "skin"),
)  # fmt: skip
HEAD = 3
# Limb thickness as a fraction of the figure's height (spine base to head, about 0.7 m)
_WIDTH = {"legs": 0.17, "torso": 0.30, "arms": 0.11, "skin": 0.08}
_HEAD_RADIUS = 0.16


@dataclass
class Look:
    """How one figure is drawn: BGR colours per part and an optional held object.

    obj_joint: the joint holding the object (-1: none); obj_size: its half width and half
    height as fractions of the figure's height; obj_color BGR.
    """

    colors: dict[str, tuple[int, int, int]] = field(
        default_factory=lambda: {
            "legs": (90, 70, 60), "torso": (60, 140, 90), "arms": (60, 140, 90),
            "skin": (150, 180, 220),
        }
    )  # fmt: skip
    obj_joint: int = -1
    obj_size: tuple[float, float] = (0.09, 0.13)
    obj_color: tuple[int, int, int] = (0, 0, 0)


def figure_height(xy: np.ndarray) -> float:
    """Pixel length of the spine (base to head) averaged over frames: xy (T, 25, 2)."""
    return float(np.linalg.norm(xy[:, HEAD] - xy[:, 0], axis=-1).mean())


_SHIFT = 4  # fixed-point bits of the pixel coordinates: sub-pixel precision for smooth motion


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * (1 << _SHIFT))), int(round(p[1] * (1 << _SHIFT)))


def figure_shapes(xy: np.ndarray, look: Look, unit: float, z: np.ndarray | None = None) -> list:
    """One frame's figure as shapes in drawing order: (depth, part, kind, geometry).

    xy (25, 2) pixels; unit: the figure height in pixels (sets the thicknesses); z (25,) joint
    depths, or None (depth 0). Kinds: "line" (p, q, width) per limb in LIMBS order, "circle"
    (centre, radius) for the head, "rect" (p0, p1) for the held object (part "object").
    """
    z = np.zeros(len(xy)) if z is None else z
    shapes = [
        (
            0.5 * (z[a] + z[b]),
            part,
            "line",
            (_pt(xy[a]), _pt(xy[b]), max(1, round(_WIDTH[part] * unit))),
        )
        for a, b, part in LIMBS
    ]
    radius = max(2, int(round(_HEAD_RADIUS * unit * (1 << _SHIFT))))
    shapes.append((z[HEAD], "skin", "circle", (_pt(xy[HEAD]), radius)))
    if look.obj_joint >= 0:
        c, half = xy[look.obj_joint], np.array(look.obj_size) * unit
        # just in front of the hand
        shapes.append((z[look.obj_joint] - 1.0, "object", "rect", (_pt(c - half), _pt(c + half))))
    return shapes


def _draw(img: np.ndarray, kind: str, geometry: tuple, value, line_type: int) -> None:
    if kind == "line":
        p, q, width = geometry
        cv2.line(img, p, q, value, width, line_type, _SHIFT)
    elif kind == "circle":
        cv2.circle(img, *geometry, value, -1, line_type, _SHIFT)
    else:
        cv2.rectangle(img, *geometry, value, -1, line_type, _SHIFT)


def draw_figure(img: np.ndarray, xy: np.ndarray, look: Look, unit: float) -> None:
    """Draw one frame's figure into the BGR image img (H, W, 3) in place; xy (25, 2) pixels.

    Shapes go in `figure_shapes` order, depth ignored: limbs, the head, the held object.
    """
    for _, part, kind, geometry in figure_shapes(xy, look, unit):
        color = look.obj_color if part == "object" else look.colors[part]
        _draw(img, kind, geometry, color, cv2.LINE_AA)


def render_rgb(
    path: str | os.PathLike,
    xy: np.ndarray,
    background: np.ndarray,
    look: Look,
    fps: float = 30.0,
    noise: float = 4.0,
    rng: np.random.Generator | None = None,
) -> Path:
    """Write an MJPG .avi of the figure: xy (T, 25, 2) colour pixels, background (H, W, 3) BGR.

    Frames get Gaussian grain of std `noise` (a random window of one noise field per frame, so
    it changes from frame to frame). Returns the path.
    """
    path = Path(path)
    h, w = background.shape[:2]
    rng = rng if rng is not None else np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"video {path}: OpenCV cannot open an MJPG writer for it")
    unit = figure_height(xy)
    pad = 16  # grain: one noise field, a random window of it per frame (cheap, still changing)
    grain = rng.normal(0.0, noise, (h + pad, w + pad, 1)).astype(np.int16) if noise > 0 else None
    try:
        for t in range(len(xy)):
            img = background.copy()
            draw_figure(img, xy[t], look, unit)
            if grain is not None:
                dy, dx = rng.integers(0, pad, 2)
                img = np.clip(img + grain[dy : dy + h, dx : dx + w], 0, 255).astype(np.uint8)
            writer.write(img)
    finally:
        writer.release()
    return path


def render_depth(
    out_dir: str | os.PathLike,
    xy: np.ndarray,
    z_mm: np.ndarray,
    size: tuple[int, int],
    look: Look,
    unit: float | None = None,
) -> Path:
    """Write MDepth-%08d.png (16-bit, mm, background 0) for each frame into out_dir.

    xy (T, 25, 2) depth pixels, z_mm (T, 25) joint depths, size (width, height). Each limb takes
    the mean depth of its two joints; farther limbs are drawn first. Returns out_dir.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, h = size
    unit = figure_height(xy) if unit is None else unit
    for t in range(len(xy)):
        img = np.zeros((h, w), np.uint16)
        _draw_depth(img, xy[t], z_mm[t], look, unit)
        if not cv2.imwrite(str(out / f"MDepth-{t + 1:08d}.png"), img):
            raise OSError(f"depth folder {out}: cannot write frame {t + 1}")
    return out


def _draw_depth(img: np.ndarray, xy: np.ndarray, z: np.ndarray, look: Look, unit: float) -> None:
    """One depth frame, far to near: every shape at its own depth (a limb at its joints' mean)."""
    shapes = figure_shapes(xy, look, unit, z)
    for depth, _, kind, geometry in sorted(shapes, key=lambda s: -s[0]):
        _draw(img, kind, geometry, int(np.clip(depth, 1, 65535)), cv2.LINE_8)


def textured_background(
    size: tuple[int, int], rng: np.random.Generator, saturation: float = 0.35
) -> np.ndarray:
    """A random (H, W, 3) uint8 BGR backdrop: a smooth colour field of low saturation plus a
    floor band and fine texture. size is (width, height)."""
    w, h = size
    cells = rng.integers(3, 8, 2)
    grey = rng.uniform(60, 200, (cells[1], cells[0], 1))
    tint = rng.uniform(-1, 1, (cells[1], cells[0], 3)) * saturation * 100
    coarse = np.clip(grey + tint, 0, 255).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    floor = int(h * rng.uniform(0.7, 0.85))
    img[floor:] *= rng.uniform(0.55, 0.85)
    img += rng.normal(0.0, rng.uniform(3, 12), (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_colors(rng: np.random.Generator, hues: Sequence[float]) -> dict[str, tuple]:
    """Clothing and skin colours (BGR) with clothing hues drawn from `hues` (OpenCV 0-180)."""

    def hsv(hue: float, s: float, v: float) -> tuple[int, int, int]:
        px = np.uint8([[[hue % 180, s, v]]])
        return tuple(int(c) for c in cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0])

    shirt = hsv(rng.choice(hues), rng.uniform(60, 200), rng.uniform(90, 230))
    legs = hsv(rng.choice(hues), rng.uniform(30, 160), rng.uniform(50, 170))
    skin = hsv(rng.uniform(8, 20), rng.uniform(60, 140), rng.uniform(120, 230))
    return {"legs": legs, "torso": shirt, "arms": shirt, "skin": skin}
