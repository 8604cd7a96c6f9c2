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
    from skelact.layouts import get_layout, joint_map

    store = open_annotations(src)
    have = store.top.get("layout")
    if have in (None, "generic"):
        raise ValueError(
            f"{src}: its joints have no names (layout {have!r}), so they cannot be remapped; "
            "prepare it with its layout, or set the file's 'layout'"
        )
    index = joint_map(get_layout(have), get_layout(layout))
    out = Path(dst)
    target = out.with_name(out.name + ".store") if out.suffix in PICKLE_SUFFIXES else out
    with StoreWriter(target, str(src)) as writer:
        for i in range(len(store)):
            sample = dict(store[i])
            for key in PER_JOINT_FIELDS:
                if key in sample:
                    sample[key] = np.ascontiguousarray(np.asarray(sample[key])[:, :, index])
            writer.add(sample)
        split = {s: [str(store.names[i]) for i in store.split(s)] for s in store.splits}
        top = {k: v for k, v in store.top.items() if k != "layout"}
        writer.close(split, layout=layout, **top)
    if target != out:
        store_to_pickle(target, out)
        shutil.rmtree(target)
    return {"samples": len(store), "from": have, "to": layout, "path": str(out)}


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
