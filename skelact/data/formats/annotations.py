"""Annotation files, whatever their format: load, save, and open for training.

`load_annotations` / `save_annotations` read and write a whole file (a skelact store, or a
pyskl / mmaction2 pickle) as the dict of `skelact.data.formats.schema`; `open_annotations`
gives training the store itself, converting a pickle once into a cached store.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.formats.pickle_stream import pickle_to_store
from skelact.data.formats.pickles import (
    PICKLE_SUFFIXES,
    load_pickle,
    store_to_pickle,
    write_pickle,
)
from skelact.data.formats.schema import PER_JOINT_FIELDS, validate
from skelact.data.formats.store import SkeletonStore, StoreError, is_store
from skelact.data.formats.store_write import StoreWriter

log = logging.getLogger("skelact")


def save_annotations(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Validate `data` and write it atomically; returns the path.

    A path ending in .pkl / .pickle gets the pyskl pickle, any other path a skelact store
    (a folder, see `skelact.data.formats.store`).
    """
    path = Path(path)
    validate(data, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix not in (".pkl", ".pickle"):
        with StoreWriter(path) as writer:
            for ann in data["annotations"]:
                writer.add(ann)
            top = {k: v for k, v in data.items() if k not in ("split", "annotations")}
            return writer.close(data["split"], **top)
    return write_pickle(data, path)


def load_annotations(path: str | os.PathLike, validate_data: bool = True) -> dict[str, Any]:
    """Read an annotation file (a skelact store, or skelact's, pyskl's or mmaction2's pickle
    through the restricted unpickler) and validate it. A store's arrays are memory-mapped."""
    path = Path(path)
    if path.is_dir():
        data = SkeletonStore(path).to_dict()
    elif not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    else:
        data = load_pickle(path)
    if validate_data:
        validate(data, source=str(path))
    return data


def cache_root() -> Path:
    """Where converted pickles are kept: $SKELACT_CACHE, else ~/.cache/skelact."""
    return Path(os.environ.get("SKELACT_CACHE") or Path.home() / ".cache" / "skelact")


def open_annotations(path: str | os.PathLike) -> SkeletonStore:
    """The store at `path`, or for a pickle, its converted store from the cache (converted
    now if missing, or if the pickle changed: another size, mtime and content hash)."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        return SkeletonStore(path)
    st = path.stat()
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    target = cache_root() / "stores" / f"{path.stem}-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock")):
        source = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if is_store(target):
            try:
                store = SkeletonStore(target)
                if _same_source(store, path, source):
                    return store
                reason = "the pickle changed"
            except StoreError as err:
                reason = f"the cached copy is unreadable ({err})"
            log.info("%s: converting it again into %s: %s", path, target, reason)
        else:
            log.info("%s: converting it once into the store %s", path, target)
        source["sha256"] = _sha256(path)
        pickle_to_store(path, target, source)
        return SkeletonStore(target)


def remap_layout(src: str | os.PathLike, dst: str | os.PathLike, layout: str) -> dict:
    """Rewrite the annotation file `src` in another named joint layout: every per-joint field
    (`PER_JOINT_FIELDS`) takes, for each joint of `layout`, the joint of the file's layout of
    the same name or alias (`skelact.layouts.joint_map`; refused if one is missing). Writes a
    store, or a pickle when dst ends in .pkl; everything else is kept. Returns a summary."""
    store = open_annotations(src)
    have = store.top.get("layout")
    index = _joint_index(src, have, layout)
    with _writer(dst, str(src)) as writer:
        for i in _samples(store, f"remapping {Path(src).name}"):
            writer.add(_take_joints(dict(store[i]), index))
        split = {s: [str(store.names[i]) for i in store.split(s)] for s in store.splits}
        top = {k: v for k, v in store.top.items() if k != "layout"}
        writer.close(split, layout=layout, **top)
    return {"samples": len(store), "from": have, "to": layout, "path": str(dst)}


def _samples(store: SkeletonStore, desc: str):
    """The store's sample indices, with a progress bar on a terminal."""
    from tqdm import tqdm

    return tqdm(range(len(store)), desc=desc, unit="sample", disable=None, leave=False)


@contextlib.contextmanager
def _writer(dst: str | os.PathLike, source: str):
    """A `StoreWriter` for `dst`; where dst ends in .pkl, the store is written beside it and
    turned into that pyskl pickle once the block ends."""
    out = Path(dst)
    target = out.with_name(out.name + ".store") if out.suffix in PICKLE_SUFFIXES else out
    with StoreWriter(target, source) as writer:
        yield writer
    if target != out:
        store_to_pickle(target, out)
        shutil.rmtree(target)


def merge_annotations(
    sources: list[str | os.PathLike],
    dst: str | os.PathLike,
    *,
    layout: str | None = None,
    holdout: float = 0.05,
    seed: int = 0,
) -> dict:
    """Several annotation files in one, for pretraining on several small sets (then
    `trainer.init_from`). Each file's classes are kept apart ("<file>: <class>", labels
    offset), its samples named "<file>/<name>", its splits kept as "<file>/<split>"; splits
    "train" and "val" hold every sample, `holdout` of each file's at random in "val" (drawn
    from `seed` and the file's name, so the same whatever the order of the files).
    `layout`: every file's joints moved into it by name first (as `remap_layout`); without
    it the files must share one. Writes a store, or a pickle when dst ends in .pkl."""
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"merge: holdout must be in [0, 1), got {holdout}")
    paths = [Path(s) for s in sources]
    tags = [
        p.name.removesuffix(".store").removesuffix(".pkl").removesuffix(".pickle") for p in paths
    ]
    if len(paths) < 2:
        raise ValueError("merge: give at least two annotation files")
    if len(set(tags)) != len(tags):
        raise ValueError(f"merge: the files' names must differ (they name the classes): {tags}")
    stores = [open_annotations(p) for p in paths]
    for path, store in zip(paths, stores, strict=True):
        if len(store) and int(store.labels.min()) < 0:
            raise ValueError(f"{path}: it has samples without a label; label them first")
    layouts = [store.top.get("layout") for store in stores]
    if layout is None and len(set(layouts)) > 1:
        listed = ", ".join(f"{p} ({have})" for p, have in zip(paths, layouts, strict=True))
        raise ValueError(f"merge: the files have different joint layouts: {listed}; give --layout")
    index = {
        path: _joint_index(path, have, layout)
        for path, have in zip(paths, layouts, strict=True)
        if layout is not None and have != layout
    }
    classes: list[str] = []
    split: dict[str, list[str]] = {"train": [], "val": []}
    parts = []
    with _writer(dst, ", ".join(map(str, paths))) as writer:
        for path, tag, store in zip(paths, tags, stores, strict=True):
            offset, names = len(classes), store.classes
            count = store.num_classes()
            classes += [f"{tag}: {names[k] if k < len(names) else k}" for k in range(count)]
            # each file's own draw (seed and file name), whatever the order of the files
            rng = np.random.default_rng([seed, zlib.crc32(tag.encode())])
            held = set(rng.permutation(len(store))[: int(round(holdout * len(store)))].tolist())
            for i in _samples(store, f"merging {path.name}"):
                sample = dict(store[i])
                name = f"{tag}/{sample['frame_dir']}"
                sample["frame_dir"], sample["label"] = name, int(sample["label"]) + offset
                writer.add(_take_joints(sample, index[path]) if path in index else sample)
                split["val" if i in held else "train"].append(name)
            for s in store.splits:
                split[f"{tag}/{s}"] = [f"{tag}/{store.names[i]}" for i in store.split(s)]
            parts.append({"file": str(path), "path": str(path.resolve()), "tag": tag,
                          "samples": len(store), "classes": count,
                          "label_offset": offset, "held_out": len(held)})  # fmt: skip
        writer.close(split, layout=layout or layouts[0], classes=classes, dataset="merged",
                     merged_from=parts)  # fmt: skip
    return {"samples": sum(p["samples"] for p in parts), "classes": len(classes),
            "val": len(split["val"]), "parts": parts, "path": str(dst)}  # fmt: skip


def _joint_index(path, have: str | None, layout: str) -> np.ndarray:
    """For each joint of `layout`, the joint of the file's layout `have` it comes from
    (`skelact.layouts.joint_map`); ValueError naming the file where that cannot be."""
    from skelact.layouts import get_layout, joint_map

    if have in (None, "generic"):
        raise ValueError(
            f"{path}: its joints have no names (layout {have!r}), so they cannot be moved into "
            f"{layout}; prepare it with its layout, or set the file's 'layout'"
        )
    try:
        return joint_map(get_layout(have), get_layout(layout))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _take_joints(sample: dict, index: np.ndarray) -> dict:
    """`sample` with every per-joint field (`PER_JOINT_FIELDS`) reduced to the joints `index`."""
    for key in PER_JOINT_FIELDS:
        if key in sample:
            sample[key] = np.ascontiguousarray(np.asarray(sample[key])[:, :, index])
    return sample


def _same_source(store: SkeletonStore, path: Path, source: dict) -> bool:
    old = store.meta.get("source") or {}
    if all(old.get(k) == source[k] for k in ("size", "mtime_ns")):
        return True
    return old.get("size") == source["size"] and old.get("sha256") == _sha256(path)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _locked(lock_path: Path):
    """An exclusive lock: DDP ranks started together convert a pickle once, not each."""
    import fcntl

    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
