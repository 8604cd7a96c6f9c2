"""Foreign annotation pickles (pyskl, mmaction2): read safely, write back.

Unpickling can run any code a file names, so pickles go through `SafeUnpickler`, which admits
numpy arrays, numpy scalars and dtypes, and builtin containers, and refuses anything else
with an error naming the file and the refused global. Training reads a pickle through a store
converted once and cached (`skelact.data.formats.annotations.open_annotations`); the
conversion (`skelact.data.formats.pickle_stream`) streams: each array's bytes go to the
store's arrays.bin as they are read from the file, so memory holds the samples' metadata,
never the arrays.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.formats.schema import AnnotationError, validate
from skelact.data.formats.store import SkeletonStore
from skelact.files import atomic_write, byte_progress

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


def write_pickle(data: dict[str, Any], path: str | os.PathLike, size: int = 0) -> Path:
    """Write validated annotations `data` as a pyskl pickle, atomically; returns the path.
    `size` > 0: about the bytes it will take, for a progress bar (on a terminal)."""
    path = Path(path)
    with atomic_write(path) as f:
        if size > 0:
            with byte_progress(f, size, f"writing {path.name}"):
                pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def store_to_pickle(store: str | os.PathLike | SkeletonStore, out: str | os.PathLike) -> Path:
    """Write a store as a pyskl/mmaction2 annotation pickle (all samples go into one pickle)."""
    if not isinstance(store, SkeletonStore):
        store = SkeletonStore(store)
    data = store.to_dict()
    validate(data, source=str(out))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # the arrays, plus about 200 bytes of keys and names per sample
    return write_pickle(data, out, store.meta["arrays_bytes"] + 200 * len(store))
