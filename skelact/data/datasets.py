"""torch Datasets that assemble, per sample, the streams a modality asks for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

# A stream loader turns one annotation sample into that stream's tensor, (K, ...) with K
# test-time clips (K = 1 in training).
StreamLoader = Callable[[dict, np.random.Generator], torch.Tensor]


class StoreSamples:
    """The samples `indices` of a store, as a sequence of sample dicts (read when indexed).

    Holds the store (memory-mapped in each process) and an index array: DataLoader workers
    share both with the parent without copying, unlike a list of dicts.
    """

    def __init__(self, store, indices):
        self.store, self.indices = store, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict:
        return self.store[self.indices[j]]

    def name(self, j: int) -> str:
        return str(self.store.names[self.indices[j]])

    def take(self, positions) -> StoreSamples:
        return StoreSamples(self.store, self.indices[np.asarray(positions, np.int64)])


class ActionDataset(Dataset):
    """Samples of one split; item i is {"label", "index", <stream>: tensor (K, ...)}.

    `samples`: a sequence of annotation dicts (a list, or `StoreSamples`). An item is asked for
    as i (epoch 0: evaluation) or as (i, epoch), as `EpochSampler` yields them: every random
    choice of sample i in epoch e comes from a Generator seeded with (seed, e, i), so an epoch
    is the same with any number of workers or after a resume, and the dataset holds no
    per-epoch state (its workers can persist across epochs).
    """

    def __init__(self, samples: Sequence[dict], loaders: dict[str, StreamLoader], seed: int = 0):
        self.samples = samples if isinstance(samples, StoreSamples) else list(samples)
        self.loaders = loaders
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, i: int) -> str:
        if isinstance(self.samples, StoreSamples):
            return self.samples.name(i)
        return self.samples[i]["frame_dir"]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        sample = self.samples[i]
        rng = np.random.default_rng((self.seed, epoch, i))
        item = {"label": int(sample["label"]), "index": i}
        for name, load in self.loaders.items():
            out = load(sample, rng)
            if isinstance(out, dict):
                item.update(out)  # a loader of several streams (the skeleton streams)
            else:
                item[name] = out
        return item


def skeleton_loader(pipeline: Callable[[dict], dict], views: int = 1) -> StreamLoader:
    """Wrap a transform pipeline as a stream loader: (K, M, T, V, C') float tensor.

    `views` > 1 runs the pipeline that many times on successive draws of the sample's
    generator and stacks the results as K (training with `model.replica_augment`: one
    augmented view per replica)."""

    def run(keypoint: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return pipeline({"keypoint": keypoint, "rng": rng})["keypoint"]

    def load(sample: dict, rng: np.random.Generator) -> torch.Tensor:
        kp = np.asarray(sample["keypoint"], np.float32)
        out = run(kp, rng) if views == 1 else np.concatenate([run(kp, rng) for _ in range(views)])
        return torch.from_numpy(np.ascontiguousarray(out))

    return load


def skeleton_group_loader(
    pipeline: Callable[[dict], dict], channels: dict[str, list[int]], views: int = 1
) -> Callable[[dict, np.random.Generator], dict[str, torch.Tensor]]:
    """Several skeleton streams from one pass of the pipeline: each stream takes its channels
    of the shared output, {stream: (K, M, T, V, C_stream)}."""
    load_all = skeleton_loader(pipeline, views)
    runs = {name: channel_runs(idx) for name, idx in channels.items()}

    def load(sample: dict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        x = load_all(sample, rng)  # (K, M, T, V, C_all)
        out = {}
        for name, spans in runs.items():
            parts = [x[..., a:b] for a, b in spans]
            out[name] = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        return out

    return load


def channel_runs(index: Sequence[int]) -> list[tuple[int, int]]:
    """Channel positions -> the (start, stop) slices of their consecutive runs, in order:
    [0, 1, 2, 62, 63, 64] -> [(0, 3), (62, 65)]. A stream's channels are a few such runs (its
    kinds, then the shared partner channels); slicing them costs less than half of a
    gather along the last axis (index_select) at NTU shape, the same values."""
    spans: list[list[int]] = []
    for i in map(int, index):
        if spans and spans[-1][1] == i:
            spans[-1][1] = i + 1
        else:
            spans.append([i, i + 1])
    return [(a, b) for a, b in spans]


def skeleton_streams(dcfg, streams: Sequence[str]) -> dict[str, list[str]]:
    """The feature kinds of each skeleton stream: "skeleton" takes data.skeleton.features, any
    other "skeleton_*" stream its entry in data.skeleton.stream_features."""
    table = dcfg.skeleton.get("stream_features") or {}
    kinds = {}
    for name in streams:
        if name == "skeleton":
            kinds[name] = list(dcfg.skeleton.features)
        elif name.startswith("skeleton_"):
            if name not in table:
                raise ValueError(
                    f"skeleton stream {name!r} has no data.skeleton.stream_features entry; "
                    f"known: {sorted(table)}"
                )
            kinds[name] = list(table[name])
    return kinds


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffle with a permutation seeded by (seed, epoch) and shard it across ranks.

    Yields (index, epoch) pairs: the dataset seeds its augmentation with them. Each rank gets
    every world-th index (padded by wrapping so ranks get equal counts); reproducible for a
    given epoch, which is what makes resume exact.
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.world)

    def __iter__(self):
        order = np.arange(self.size)
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch, 7)).permutation(self.size)
        total = len(self) * self.world
        order = np.resize(order, total)  # wraps around to pad
        return ((i, self.epoch) for i in order[self.rank :: self.world].tolist())


def resolve_layout(dcfg, store):
    """The Layout for a run: data.layout, or "auto" = the store's own, else generic. Refuses,
    naming the file and the way out, a layout of another joint count than the file's."""
    from skelact.layouts import LAYOUTS, get_layout

    num_joints = int(store.shapes("keypoint")[0, 2])
    name = dcfg.layout
    if name in (None, "auto"):
        name = store.layout or "generic"
    if name in LAYOUTS and LAYOUTS[name].num_joints != num_joints:
        raise ValueError(
            f"{dcfg.ann_file}: data.layout={name} has {LAYOUTS[name].num_joints} joints, the "
            f"file's bodies {num_joints} (its layout: {store.layout or 'none recorded'}): set "
            "data.layout=auto, or use the data config of this file's set; `skelact repack "
            "--layout` maps a file onto another layout"
        )
    return get_layout(name, num_joints)


def training_views(mcfg, views: int = 1) -> int:
    """Augmented views of each training sample the skeleton pipeline makes: one per replica
    with `model.replica_augment`, else `views` (trainer.views)."""
    if mcfg.get("replica_augment"):
        if views > 1:
            raise ValueError(
                "trainer.views > 1 and model.replica_augment=true do not combine: each replica "
                "already trains on its own view"
            )
        return int(mcfg.get("replicas", 1))
    if views < 1:
        raise ValueError(f"trainer.views must be >= 1, got {views}")
    return views


def split_samples(store, split: str) -> StoreSamples:
    """The samples of `split` (a `SkeletonStore`), in the split's order."""
    return StoreSamples(store, store.split(split))


def build_loaders(dcfg, mcfg, store, streams, train: bool, views: int = 1) -> tuple[dict, dict]:
    """Stream loaders for one split and the input spec each stream's encoder needs. `views`
    (trainer.views): augmented views of each training sample."""
    loaders, specs = {}, {}
    skel = skeleton_streams(dcfg, streams)
    if skel:
        key = "skeleton" if list(skel) == ["skeleton"] else "skeleton*"  # * : several streams
        k = training_views(mcfg, views) if train else 1
        loaders[key], specs = _skeleton_group(dcfg, store, skel, train, k)
    for name in streams:
        if name in skel:
            continue
        if name in ("rgb", "depth"):
            loaders[name], specs[name] = frame_stream(name, dcfg[name], mcfg[name], train)
        else:
            raise ValueError(f"unknown stream {name!r}")
    return loaders, specs


def skeleton_channels(
    kinds: dict[str, list[str]], c: int, v: int
) -> tuple[list[str], dict[str, list[int]]]:
    """The union of the streams' feature kinds (computed once) and each stream's channel
    indices into it, for joints of C coordinates and V joints."""
    from skelact.data.prep.channels import MotionFeatures

    union = list(dict.fromkeys(k for ks in kinds.values() for k in ks))
    offsets = np.cumsum([0] + [MotionFeatures.channels([k], c, v) for k in union])
    channels = {
        name: [i for k in ks for i in range(offsets[union.index(k)], offsets[union.index(k) + 1])]
        for name, ks in kinds.items()
    }
    return union, channels


def _skeleton_group(dcfg, store, kinds: dict[str, list[str]], train: bool, views: int = 1):
    """One pipeline for every skeleton stream (preprocessing runs once per sample), computing
    the union of their feature kinds; one loader and a spec per stream. `views`: training
    views per sample (`skeleton_loader`)."""
    from skelact.data.prep.transforms import build_skeleton_pipeline

    layout = resolve_layout(dcfg, store)
    scfg = dcfg.skeleton
    shapes = store.shapes("keypoint")  # (N, 4): M T V C per sample
    bodies = scfg.num_bodies or int(shapes[:, 0].max())
    c, v = int(shapes[0, 3]), layout.num_joints
    union, channels = skeleton_channels(kinds, c, v)
    specs = {}
    for name in kinds:
        specs[name] = {
            "num_joints": v,
            "num_bodies": bodies,
            "channels": len(channels[name]),
            "layout": layout.name,
            "kinds": list(kinds[name]),  # lets the joint MLP skip repeated columns
        }
    pipe = build_skeleton_pipeline(layout, scfg, train, bodies, union)
    if list(kinds) == ["skeleton"]:
        return skeleton_loader(pipe, views), specs  # the plain single stream: no channel selection
    return skeleton_group_loader(pipe, channels, views), specs


def frame_stream(kind: str, scfg, mcfg, train: bool) -> tuple[StreamLoader, dict]:
    """Loader and spec of an RGB or depth stream: cached features (K, T, D) or frames.

    Frames: (1, T, C, H, W) per sample, decoded in the DataLoader workers.
    """
    from skelact.data.media.features import (
        CHANNELS,
        _read_index,
        cache_settings,
        crop_points,
        load_clip,
        load_features,
        source_path,
    )
    from skelact.data.prep.sampling import sample_indices

    if mcfg.input == "features":
        root = feature_cache(kind, scfg)
        dim = feature_dim(root)
        made = (cache_settings(root) or {}).get("modality")
        if made not in (None, kind):
            raise ValueError(
                f"data.{kind}.features={root} holds {made} features (its index.json), not "
                f"{kind}: give the cache of `skelact prepare features --modality {kind}`"
            )

        def load(sample: dict, rng: np.random.Generator) -> torch.Tensor:
            feats = load_features(root, sample["frame_dir"]).astype(np.float32)  # (T0, D)
            inds = sample_indices(len(feats), scfg.num_frames, train, rng)
            return torch.from_numpy(feats[inds])[None]  # (1, T, D)

        listed = (_read_index(root) or {}).get("samples", {})  # name -> "ok" or why not

        def has(sample: dict) -> bool:
            name = sample["frame_dir"]
            if (root / f"{name}.npy").is_file():
                return True
            if listed.get(name) == "ok":  # written once, gone since: not "no input"
                raise FileNotFoundError(
                    f"feature cache {root} is damaged: its index.json lists {name} as written "
                    f"but {name}.npy is missing; run `skelact prepare features` into it again "
                    "(it writes what is missing)"
                )
            return False

        return load, {
            "feature_dim": dim,
            # how the cache was made: lets a checkpoint compute the features of a new video
            "extractor": cache_settings(root),
            "has": has,
        }

    if not scfg.root:
        raise ValueError(f"model.{kind}.input=frames needs data.{kind}.root=DIR")
    root = Path(scfg.root)

    def path_of(sample: dict) -> Path:
        return source_path(sample, kind, root)

    def load_frames(sample: dict, rng: np.random.Generator) -> torch.Tensor:
        xy = crop_points(sample, kind)
        clip = load_clip(path_of(sample), xy, kind, scfg.num_frames, scfg.size, train, rng)
        return clip[None]  # (1, T, C, H, W)

    return load_frames, {
        "in_channels": CHANNELS[kind],
        "has": lambda s: path_of(s).exists(),
    }


def feature_cache(kind: str, scfg) -> Path:
    """data.<kind>.features as a path; ValueError when it is not set."""
    if not scfg.features:
        raise ValueError(
            f"model.{kind}.input=features needs data.{kind}.features=DIR "
            f"(made by `skelact prepare features --modality {kind}`)"
        )
    return Path(scfg.features)


def check_caches(cfg) -> None:
    """Each image stream of a run that reads cached features has its cache folder (and its
    width): refused here, before anything trains, not when the stream's data is built."""
    for kind in ("rgb", "depth"):
        if kind in cfg.modality.streams and cfg.model[kind].input == "features":
            feature_dim(feature_cache(kind, cfg.data[kind]))


def feature_dim(root: Path) -> int:
    """Feature width D of a cache folder, from its index.json or, without one, its first file."""
    from skelact.data.media.features import _read_index

    if not root.is_dir():
        raise FileNotFoundError(
            f"feature cache {root} does not exist (make it with `skelact prepare features`)"
        )
    index = _read_index(root)
    if index is not None:
        return int(index["feature_dim"])
    first = next(root.glob("*.npy"), None)
    if first is None:
        raise FileNotFoundError(f"feature cache {root} holds no .npy files")
    return int(np.load(first, mmap_mode="r").shape[-1])


def keep_available(
    samples: StoreSamples, specs: dict, split: str, left_out: dict | None = None
) -> StoreSamples:
    """Drop samples lacking a stream's input, naming them once in the log (and, in
    `left_out`, {stream: count} of those dropped)."""
    import logging

    keep = np.arange(len(samples))
    for name, spec in specs.items():
        has = spec.get("has")
        if has is None:
            continue
        ok = np.array([has(samples[j]) for j in keep], bool)
        missing = [samples.name(j) for j in keep[~ok]]
        if len(keep) and not ok.any():
            raise SystemExit(
                f"{split}: none of its {len(keep)} sample(s) has a {name} input: "
                f"data.{name}.features (a cache of `skelact prepare features`) or "
                f"data.{name}.root holds none of them (first: {missing[0]})"
            )
        if missing:
            logging.getLogger("skelact").warning(
                "%s: %d sample(s) have no %s input and are left out: %s%s",
                split,
                len(missing),
                name,
                ", ".join(missing[:20]),
                " ..." if len(missing) > 20 else "",
            )
            keep = keep[ok]
            if left_out is not None:
                left_out[name] = len(missing)
    return samples.take(keep) if len(keep) < len(samples) else samples
