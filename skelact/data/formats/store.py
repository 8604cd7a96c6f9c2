"""The skeleton store: per-sample arrays in one file every process memory-maps read-only.

A store is a folder of three files:

    arrays.bin   every per-sample array ("keypoint" (M, T, V, C), "keypoint_score" (M, T, V),
                 "color_xy" ...), back to back, each aligned to 64 bytes
    index.npz    per array field: offset (N,), shape (N, ndim), crc32 (N,); per scalar field a
                 column (N,) (labels, names, subjects ...); per split its sample indices
    meta.json    format version, field dtypes, split names, classes, layout, dataset, report

DataLoader workers and DDP ranks map arrays.bin read-only, so they all share the operating
system's page cache instead of holding a copy each; the index is a few numpy arrays, which
fork shares without copy-on-write. A sample's bytes are checked against its crc32 when read:
a corrupt or truncated store raises StoreError naming the file, never returns wrong values.
A store may come from a stranger: its meta, index and every sample's shapes, offsets and
labels are checked when it is opened (`skelact.data.formats.store_check`), its keypoints' values
(finite) when they are read.
`StoreWriter` writes one while streaming (memory bounded by the sample count, not the data).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.formats.schema import check_finite, finite
from skelact.data.formats.store_check import (  # noqa: F401 - FORMAT, VERSION: public here too
    ALIGN,
    FORMAT,
    VERSION,
    StoreError,
    check_samples,
    read_index,
    read_meta,
)

FILES = ("arrays.bin", "index.npz", "meta.json")


def is_store(path: str | os.PathLike) -> bool:
    return (Path(path) / "meta.json").is_file()


class SkeletonStore:
    """A store opened read-only: `len`, `store[i]` -> sample dict, `split(name)` -> indices.

    Arrays in a sample dict are read-only views of the memory map (no copy). The index is read
    and arrays.bin mapped when the store is opened (a mapping costs no memory until pages are
    read), so forked DataLoader workers read the very file the index describes, even after the
    store was prepared again under the same name. A pickled store (sent to a spawned worker)
    carries its path and the identity of the files it opened; it opens them again there and
    refuses a store that was replaced in between.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        self.verify = verify
        self.meta = read_meta(self.path)
        self._check_size()
        self._index = read_index(self.path / "index.npz", self.meta)
        check_samples(self._index, self.meta, self.path)
        self._id = _identity(self.path)
        self._blob: np.ndarray | None = None
        self._map()
        top = self.meta["top"]
        self.classes: list[str] = list(top.get("classes") or [])
        self.layout: str | None = top.get("layout")
        self.names: np.ndarray = self._index["col.frame_dir"]  # (N,) str
        self.labels: np.ndarray = self._index["col.label"]  # (N,) int64

    def __len__(self) -> int:
        return int(self.meta["num_samples"])

    def __getstate__(self) -> dict:
        return {"path": self.path, "verify": self.verify, "id": self._id}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["verify"])
        if state.get("id") not in (None, self._id):
            raise StoreError(
                f"{self.path}: the store was replaced (prepared or converted again) while a run "
                "used it; start the run again"
            )

    @property
    def top(self) -> dict[str, Any]:
        """Top-level data besides splits and samples: classes, layout, dataset, report ..."""
        return self.meta["top"]

    @property
    def fields(self) -> list[str]:
        return list(self.meta["fields"])

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def split(self, name: str) -> np.ndarray:
        """Sample indices of split `name`, in the split's order."""
        if name not in self.meta["splits"]:
            raise KeyError(f"{self.path}: no split {name!r}; it has {sorted(self.splits)}")
        return self._index[f"split.{name}"]

    def shapes(self, field: str = "keypoint") -> np.ndarray:
        """(N, ndim) shape of `field` per sample (zeros where a sample lacks it)."""
        return self._index[f"field.{field}.shape"]

    def num_classes(self) -> int:
        """The class table's length if present, else max label + 1."""
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def array(self, i: int, field: str) -> np.ndarray | None:
        """Sample i's `field`: a read-only view of the map, checked against its crc32."""
        offset = int(self._index[f"field.{field}.offset"][i])
        if offset < 0:
            return None
        spec = self.meta["fields"][field]
        shape = tuple(int(s) for s in self._index[f"field.{field}.shape"][i])
        dtype = np.dtype(spec["dtype"])
        nbytes = int(np.prod(shape)) * dtype.itemsize
        raw = self._map()[offset : offset + nbytes]
        if self.verify and zlib.crc32(raw) != int(self._index[f"field.{field}.crc"][i]):
            raise StoreError(
                f"{self.path / 'arrays.bin'}: {field!r} of sample {i} ({self.names[i]}) fails "
                "its checksum: the file is corrupt; prepare the store again"
            )
        arr = raw.view(dtype).reshape(shape)
        if field == "keypoint" and self.verify and not finite(arr):
            check_finite(arr, f"{self.path / 'arrays.bin'}: sample {i} ({str(self.names[i])!r})")
        return arr

    def __getitem__(self, i: int) -> LazySample:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: sample {i} out of range (0..{len(self) - 1})")
        return LazySample(self, i)

    def value(self, i: int, key: str) -> Any:
        """Sample i's column or array `key` (arrays checked against their crc32)."""
        if key in self.meta["fields"]:
            return self.array(i, key)
        value = self._index[f"col.{key}"][i]
        return json.loads(str(value)) if self.meta["columns"][key] == "json" else value.item()

    def keys_of(self, i: int) -> list[str]:
        """The columns and arrays sample i has."""
        cols = [
            k
            for k in self.meta["columns"]
            if self._index.get(f"has.{k}") is None or self._index[f"has.{k}"][i]
        ]
        return cols + [f for f in self.meta["fields"] if self._index[f"field.{f}.offset"][i] >= 0]

    def to_dict(self) -> dict[str, Any]:
        """The whole store as an annotation dict (arrays are views of the map)."""
        return {
            **self.top,
            "split": {s: [str(self.names[i]) for i in self.split(s)] for s in self.splits},
            "annotations": [dict(self[i]) for i in range(len(self))],
        }

    def _map(self) -> np.ndarray:
        if self._blob is None:
            path = self.path / "arrays.bin"
            if self.meta["arrays_bytes"] == 0:
                self._blob = np.zeros(0, np.uint8)
            else:
                self._blob = np.memmap(path, np.uint8, mode="r").view(np.ndarray)
        return self._blob

    def _check_size(self) -> None:
        """arrays.bin has the size the meta records, enough for the samples' keypoints."""
        path, want = self.path / "arrays.bin", self.meta["arrays_bytes"]
        size = path.stat().st_size if path.is_file() else -1
        if size != want:
            raise StoreError(
                f"{path}: {size if size >= 0 else 'missing'} bytes, expected {want}: the store "
                "is truncated or incomplete; prepare it again"
            )
        n = self.meta["num_samples"]
        if not 1 <= n <= want // ALIGN:  # each sample has keypoints, ALIGN-byte aligned
            raise StoreError(f"{self.path / 'meta.json'}: {n} samples in {want} bytes; corrupt")


def _identity(path: Path) -> list[int]:
    """Which files a store folder holds now: device, inode, size and mtime of each."""
    stats = [(path / name).stat() for name in ("arrays.bin", "index.npz")]
    return [v for st in stats for v in (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)]


class LazySample(Mapping):
    """One sample of a store as a read-only mapping whose columns and arrays are read on first
    access: a DataLoader worker that needs only the keypoints never reads, checks or decodes
    the pixel positions or the JSON columns. `dict(sample)` reads everything."""

    def __init__(self, store: SkeletonStore, i: int):
        self._store, self._i = store, i
        self._keys = store.keys_of(i)
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            if key not in self._keys:
                raise KeyError(key)
            self._cache[key] = self._store.value(self._i, key)
        return self._cache[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
