"""Foreign annotation pickles (pyskl, mmaction2): read safely, convert to a store, write back.

Unpickling can run any code a file names, so pickles go through `SafeUnpickler`, which admits
numpy arrays, numpy scalars and dtypes, and builtin containers, and refuses anything else
with an error naming the file and the refused global. Training reads a pickle through a store
converted once and cached (`open_annotations`); the conversion (`skelact.data.pickle_stream`)
streams: each array's bytes go to the store's arrays.bin as they are read from the file, so
memory holds the samples' metadata, never the arrays.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.annotations import AnnotationError

# the conversion (bounded memory) lives in pickle_stream; imported here for callers
from skelact.data.pickle_stream import pickle_to_store  # noqa: E402,F401
from skelact.data.store import SkeletonStore, StoreError, is_store

log = logging.getLogger("skelact")
PICKLE_SUFFIXES = (".pkl", ".pickle")
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")
SAFE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *((m, n) for m in _NUMPY_CORE for n in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in _NUMPY_NUMERIC),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "complex"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol 2 stores bytes as latin-1 text
}


class UnsafePickleError(AnnotationError):
    """A pickle that names something other than arrays, numbers, strings and containers."""


class SafeUnpickler(pickle.Unpickler):
    """Builds only numpy arrays/scalars/dtypes and builtin containers; refuses other globals."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        check_global(self.source, module, name)
        if name == "_reconstruct":
            return _reconstruct_ndarray
        return super().find_class(module, name)


def check_global(source: str, module: str, name: str) -> None:
    """Raise UnsafePickleError unless `module.name` is one of `SAFE_GLOBALS`."""
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)  # protocol 2's __builtin__
    if (module, name) not in SAFE_GLOBALS:
        raise UnsafePickleError(
            f"{source}: refused to load {module}.{name}: annotation pickles may hold "
            "only numpy arrays, numbers, strings and containers (the file would run code)"
        )


def _reconstruct_ndarray(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refused to build an array of type {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def load_pickle(path: str | os.PathLike) -> Any:
    """Unpickle `path` with `SafeUnpickler`; any failure names the file."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return SafeUnpickler(f, str(path)).load()  # restricted
        except UnsafePickleError:
            raise
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
            raise AnnotationError(f"{path}: not a readable pickle ({err})") from err


def store_to_pickle(store: str | os.PathLike | SkeletonStore, out: str | os.PathLike) -> Path:
    """Write a store as a pyskl/mmaction2 annotation pickle (all samples go into one pickle)."""
    from skelact.data.annotations import save_annotations

    if not isinstance(store, SkeletonStore):
        store = SkeletonStore(store)
    return save_annotations(store.to_dict(), out)


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
