"""Writing a skeleton store (see `skelact.data.formats.store`) while streaming samples."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.formats.pickles import store_to_pickle
from skelact.data.formats.schema import AnnotationError, validate_sample, validate_splits
from skelact.data.formats.store import ALIGN, FORMAT, VERSION, is_store
from skelact.data.formats.store_check import check_samples


class ArrayRef:
    """Where one array lies in arrays.bin (written already, by a streaming importer)."""

    __slots__ = ("offset", "shape", "dtype", "crc")

    def __init__(self, offset: int, shape: tuple, dtype: np.dtype, crc: int):
        self.offset, self.shape, self.dtype, self.crc = offset, tuple(shape), dtype, crc


class StoreWriter:
    """Stream samples into a new store at `path`: `add(sample)` each, then `close(split=...)`.

    Samples are annotation dicts (see `skelact.data.formats.schema`). A `path` ending in .pkl
    or .pickle gets a pyskl pickle instead (the store is made first, then exported). Arrays go
    to disk at once; only scalars and offsets stay in memory. Written under a temporary name
    and renamed on `close`, so a crash never leaves a half-written store under `path`. Use as
    a context manager to remove the temporary folder on error.
    """

    def __init__(self, path: str | os.PathLike, source: str | None = None):
        self.path = Path(path)
        self.source = source or str(self.path)  # what errors name: the file converted, if any
        # a .pkl path: the store is written under the temporary name, then exported as a pickle
        self.pickle = self.path.suffix in (".pkl", ".pickle")
        # checked before any work: closing would refuse it after every sample was read
        taken = self.path.is_dir() if self.pickle else self.path.exists()
        if taken and (self.pickle or not is_store(self.path)):
            raise _not_replaced(self.path)
        # not ".NAME.tmpPID": skelact.files.atomic_write uses that name for the exported pickle
        self.tmp = self.path.with_name(f".{self.path.name}.store-tmp{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        _remove_orphans(self.path)
        self.tmp.mkdir(parents=True)
        self._blob = open(self.tmp / "arrays.bin", "w+b")
        self._pos = 0
        self._fields: dict[str, dict[str, list]] = {}  # name -> offset/shape/crc lists
        self._cols: dict[str, list] = {}
        self._names: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._names)

    def write_array(self, arr: np.ndarray | bytes, shape=None, dtype=None) -> ArrayRef:
        """Append one array's bytes (C order) to arrays.bin; returns where it went."""
        if isinstance(arr, np.ndarray):
            shape, dtype = arr.shape, arr.dtype
            arr = np.ascontiguousarray(arr)
        if np.dtype(dtype).hasobject:
            raise AnnotationError(f"{self.source}: arrays of Python objects cannot be stored")
        # a zero-size array has no bytes (memoryview cannot cast one with a zero in its shape)
        data = memoryview(arr).cast("B") if np.prod(shape, dtype=np.int64) else memoryview(b"")
        ref = ArrayRef(self._pos, shape, np.dtype(dtype), zlib.crc32(data))
        self._blob.write(data)
        pad = -(self._pos + data.nbytes) % ALIGN
        self._blob.write(b"\0" * pad)
        self._pos += data.nbytes + pad
        return ref

    def write_chunks(self, chunks) -> ArrayRef:
        """Append bytes arriving in pieces (an iterable of bytes) as one uint8 array; memory
        holds one piece at a time. Returns where it went."""
        start, crc = self._pos, 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            self._blob.write(chunk)
            self._pos += len(chunk)
        pad = -self._pos % ALIGN
        self._blob.write(b"\0" * pad)
        n, self._pos = self._pos - start, self._pos + pad
        return ArrayRef(start, (n,), np.dtype(np.uint8), crc)

    def read(self, ref: ArrayRef) -> bytes:
        """The bytes of an array written already (flushes first)."""
        self._blob.flush()
        n = math.prod(ref.shape) * ref.dtype.itemsize
        return os.pread(self._blob.fileno(), n, ref.offset)

    def add(self, sample: dict[str, Any], refs: dict[str, ArrayRef] | None = None) -> int:
        """Validate and append one sample; returns its index. `refs`: arrays already written
        (with `write_array`) for some of its fields."""
        refs = dict(refs or {})
        i = len(self._names)
        validate_sample(sample, i, None, self.source)
        name = sample["frame_dir"]
        if name in self._names:
            raise AnnotationError(
                f"{self.source}: annotation {i} repeats the name {name!r} "
                "(frame_dir must be unique)"
            )
        self._names[name] = i
        for key, value in sample.items():
            if key in refs:
                continue
            if isinstance(value, np.ndarray) and value.ndim > 0:
                refs[key] = self.write_array(value)
            else:
                self._cols.setdefault(key, [_MISSING] * i).append(_plain(value))
        for key, ref in refs.items():
            self._record(key, ref, i)
        for key, f in self._fields.items():
            if key not in refs:  # this sample lacks the field
                f["offset"].append(-1)
                f["shape"].append((0,) * f["ndim"])
                f["crc"].append(0)
        for col in self._cols.values():
            if len(col) == i:
                col.append(_MISSING)
        return i

    def _record(self, key: str, ref: ArrayRef, i: int) -> None:
        f = self._fields.get(key)
        if f is None:
            f = self._fields[key] = {"offset": [-1] * i, "shape": [], "crc": [0] * i}
            f["dtype"], f["ndim"] = ref.dtype.str, len(ref.shape)
            f["shape"] = [(0,) * f["ndim"]] * i
        if ref.dtype.str != f["dtype"] or len(ref.shape) != f["ndim"]:
            raise AnnotationError(
                f"{self.source}: sample {i} field {key!r} is {ref.dtype.str} with {len(ref.shape)} "
                f"dims; earlier samples have {f['dtype']} with {f['ndim']}"
            )
        f["offset"].append(ref.offset)
        f["shape"].append(ref.shape)
        f["crc"].append(ref.crc)

    def flush(self) -> None:
        self._blob.flush()

    def close(self, split: dict[str, list[str]], source: dict | None = None, **top: Any) -> Path:
        """Write the index and meta, rename into place; `top`: classes, layout, dataset, report
        and any other plain (JSON) top-level data; `source`: the file converted, if any.
        Returns the store's path."""
        if not self._names:
            raise AnnotationError(f"{self.source}: no samples to write")
        n = len(self._names)
        self._blob.close()
        index = {}
        for key, f in self._fields.items():
            f["offset"] += [-1] * (n - len(f["offset"]))
            f["shape"] += [(0,) * f["ndim"]] * (n - len(f["shape"]))
            f["crc"] += [0] * (n - len(f["crc"]))
            index[f"field.{key}.offset"] = np.asarray(f["offset"], np.int64)
            index[f"field.{key}.shape"] = np.asarray(f["shape"], np.int64).reshape(n, f["ndim"])
            index[f"field.{key}.crc"] = np.asarray(f["crc"], np.uint32)
        kinds = {}
        for key, col in self._cols.items():
            col += [_MISSING] * (n - len(col))
            kinds[key], index[f"col.{key}"], present = _column(col)
            if present is not None:
                index[f"has.{key}"] = present
        validate_splits(split, self._names, self.source)
        for name, members in split.items():
            index[f"split.{name}"] = np.asarray([self._names[m] for m in members], np.int64)
        meta = {
            "format": FORMAT, "version": VERSION, "num_samples": n, "arrays_bytes": self._pos,
            "fields": {k: {"dtype": f["dtype"], "ndim": f["ndim"]}
                       for k, f in self._fields.items()},
            "columns": kinds, "splits": list(split), "top": _plain(top), "source": source,
        }  # fmt: skip
        check_samples(
            index, meta, self.path, self.source
        )  # what a reader would refuse is never written
        with open(self.tmp / "index.npz", "wb") as fh:
            np.savez(fh, **index)
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if self.pickle:
            try:
                return store_to_pickle(self.tmp, self.path)
            finally:
                shutil.rmtree(self.tmp, ignore_errors=True)
        _replace_dir(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._blob.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, kind, err, tb) -> None:
        if kind is not None:
            self.abort()


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _plain(value: Any) -> Any:
    """numpy scalars and small arrays -> Python numbers and lists; containers recursively."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def _column(values: list) -> tuple[str, np.ndarray, np.ndarray | None]:
    """A column's kind ("int", "float", "str", "json"), its array, and a presence mask."""
    present = np.asarray([v is not _MISSING for v in values])
    have = [v for v in values if v is not _MISSING]
    fill = {"int": 0, "float": 0.0, "str": ""}
    if all(type(v) is int for v in have):
        kind = "int"
    elif all(type(v) in (int, float) for v in have):
        kind = "float"
    elif all(type(v) is str for v in have):
        kind = "str"
    else:
        kind = "json"
    pairs = zip(values, present, strict=True)
    if kind == "json":
        arr = np.asarray([json.dumps(v) if p else "" for v, p in pairs], np.str_)
    else:
        dtype = {"int": np.int64, "float": np.float64, "str": np.str_}[kind]
        arr = np.asarray([v if p else fill[kind] for v, p in pairs], dtype)
    return kind, arr, None if present.all() else present


def _not_replaced(path: Path) -> FileExistsError:
    return FileExistsError(
        f"{path} exists and is not a skelact store; not replacing it (give another output path)"
    )


def _remove_orphans(path: Path) -> None:
    """Remove the half-written stores that writers of `path` killed before they finished
    (`kill -9`, the OOM killer) left beside it: .NAME.store-tmpPID of a process that is gone."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.store-tmp*"):
        pid = tmp.name.rsplit("store-tmp", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path`, replacing an existing store (moved aside, then removed)."""
    if path.exists() and not is_store(path):  # made since the writer started
        shutil.rmtree(tmp, ignore_errors=True)
        raise _not_replaced(path)
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def disk_size(path: Path) -> int:
    """Bytes of a file, or of the files of a store folder."""
    path = Path(path)
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
