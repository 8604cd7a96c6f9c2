"""Checks a store must pass when opened (a store may come from a stranger or be damaged).

`read_meta` checks meta.json's structure; `read_index` reads only the members of index.npz the
format defines, with their sizes and dtypes checked from the zip directory and the npy headers
before any is read; `check_samples` applies the rules of the pickle path
(`skelact.data.formats.schema`) to the whole index at once: labels within the class table (or
MAX_LABEL without one), frames and keypoint shapes within the sanity bounds, arrays aligned and
inside arrays.bin with no byte count that wraps around. Values that need the arrays themselves
(non-finite coordinates) are checked when a sample's arrays are read.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from skelact.data.formats import schema as rules
from skelact.data.formats.schema import AnnotationError

FORMAT, VERSION = "skelact-store", 1
ALIGN = 64
MAX_TEXT = 4096  # characters of one string column value
KINDS = {"int": np.dtype(np.int64), "float": np.dtype(np.float64)}
REQUIRED_COLUMNS = {"frame_dir": "str", "label": "int", "total_frames": "int"}


class StoreError(AnnotationError):
    """A missing, truncated or corrupt store; the message names the file."""


def read_meta(path: Path) -> dict[str, Any]:
    """meta.json of the store `path`, its structure checked."""
    meta_path = path / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a skelact annotation store: it has no meta.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{meta_path}: not valid JSON ({err}); the store is corrupt") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"{meta_path}: not a skelact store (no format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise StoreError(
            f"{meta_path}: store version {meta.get('version')}, this skelact reads {VERSION}"
        )
    problem = _meta_problem(meta)
    if problem:
        raise StoreError(f"{meta_path}: {problem}; the store is corrupt")
    try:
        rules.check_top(meta["top"], str(meta_path))
    except AnnotationError as err:
        raise StoreError(str(err)) from None
    return meta


def _meta_problem(meta: dict) -> str | None:
    def count(x) -> bool:
        return type(x) is int and x >= 0

    fields, columns = meta.get("fields"), meta.get("columns")
    if not count(meta.get("num_samples")) or not count(meta.get("arrays_bytes")):
        return "num_samples and arrays_bytes must be counts"
    if not isinstance(fields, dict) or not isinstance(columns, dict):
        return "fields and columns must be mappings"
    for name, spec in fields.items():
        ndim = spec.get("ndim") if isinstance(spec, dict) else None
        if type(ndim) is not int or not 1 <= ndim <= 8 or _dtype(spec.get("dtype")) is None:
            return f"field {name!r} has a bad spec {spec!r}"
    if fields.get("keypoint", {}).get("ndim") != 4:
        return "no field 'keypoint' with 4 dims (M, T, V, C)"
    if _dtype(fields["keypoint"]["dtype"]).kind != "f":
        return "'keypoint' must hold floats"
    if any(kind not in ("int", "float", "str", "json") for kind in columns.values()):
        return f"unknown column kinds in {columns}"
    if any(columns.get(c) != kind for c, kind in REQUIRED_COLUMNS.items()):
        return f"columns must include {REQUIRED_COLUMNS}"
    splits = meta.get("splits")
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        return "splits must be a list of names"
    if not isinstance(meta.get("top"), dict):
        return "top must be a mapping"
    return None


def _dtype(spec: Any) -> np.dtype | None:
    """A plain numeric dtype from its string, else None."""
    try:
        dtype = np.dtype(spec) if isinstance(spec, str) else None
    except (TypeError, ValueError):  # ValueError: "(-1,)f4" and other malformed strings
        return None
    ok = dtype is not None and dtype.kind in "biuf" and dtype.itemsize > 0
    return dtype if ok else None


def index_members(meta: dict) -> dict[str, tuple[tuple | None, str]]:
    """Name -> (shape or None for a split, kind) of every member index.npz may hold."""
    n = meta["num_samples"]
    want: dict[str, tuple[tuple | None, str]] = {}
    for f, spec in meta["fields"].items():
        want[f"field.{f}.offset"] = ((n,), "<i8")
        want[f"field.{f}.shape"] = ((n, spec["ndim"]), "<i8")
        want[f"field.{f}.crc"] = ((n,), "<u4")
    for c, kind in meta["columns"].items():
        want[f"col.{c}"] = ((n,), kind)
        want[f"has.{c}"] = ((n,), "|b1")  # optional: only for columns some samples lack
    for s in meta["splits"]:
        want[f"split.{s}"] = (None, "<i8")
    return want


def read_index(path: Path, meta: dict) -> dict[str, np.ndarray]:
    """The members of index.npz the format defines; anything else, or a member of another
    shape, dtype or size, is refused before a byte of it is decompressed."""
    want = index_members(meta)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
            extra = [i.filename for k, i in infos.items() if k not in want]
            missing = [k for k in want if k not in infos and not k.startswith("has.")]
            if extra or missing:
                raise StoreError(
                    f"{path}: members {extra[:3]} are not part of the format, or {missing[:3]} "
                    "are missing; the store is corrupt (nothing of it was read)"
                )
            for key, info in infos.items():
                _check_header(zf, info, *want[key], meta["num_samples"], path)
            return {
                key: np.lib.format.read_array(zf.open(info), allow_pickle=False)
                for key, info in infos.items()
            }
    except FileNotFoundError:
        raise StoreError(f"{path}: missing; the store is incomplete") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        if isinstance(err, StoreError):
            raise
        raise StoreError(f"{path}: unreadable ({err}); the store is corrupt") from err


def _check_header(zf, info, shape, kind: str, n: int, path: Path) -> None:
    """The member's npy header against the format; its size against the zip directory."""
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        got, fortran, dtype = read(fh)
    if shape is None:  # a split: sample indices, each sample at most once
        ok_shape = len(got) == 1 and got[0] <= n
    else:
        ok_shape = tuple(got) == shape
    if kind in ("str", "json"):
        ok_dtype = dtype.kind == "U" and dtype.itemsize <= 4 * MAX_TEXT
    else:
        ok_dtype = dtype == KINDS.get(kind, np.dtype(kind)) and not fortran
    nbytes = int(np.prod(got, dtype=object)) * dtype.itemsize  # Python ints: no wrap
    if not (ok_shape and ok_dtype) or info.file_size > nbytes + (1 << 16):
        raise StoreError(
            f"{path}: member {info.filename} is {dtype} {tuple(got)} ({info.file_size} bytes), "
            f"the format wants {kind} {shape or '(at most the samples,)'}; the store is corrupt"
        )


def check_samples(index: dict[str, np.ndarray], meta: dict, path: Path, source=None) -> None:
    """The pickle path's rules over the whole index (vectorized); StoreError naming the
    first bad sample. `path`: the store; messages name its index.npz, or `source`."""
    source = source or path / "index.npz"
    names = index["col.frame_dir"]

    def where(i) -> str:
        return f"{source}: sample {int(i)} ({str(names[i])!r})"

    for col in REQUIRED_COLUMNS:
        has = index.get(f"has.{col}")
        if has is not None and not has.all():
            raise StoreError(f"{where(np.argmin(has))}: misses field {col!r}")
    if len(np.unique(names)) != len(names):
        uniq, counts = np.unique(names, return_counts=True)
        raise StoreError(f"{source}: the name {str(uniq[counts > 1][0])!r} is repeated")
    n_cls = rules.check_top(meta["top"], str(path / "meta.json"))
    labels = index["col.label"]
    _first_bad(labels > (n_cls - 1 if n_cls else rules.MAX_LABEL), labels < 0)(
        lambda i: rules.check_label(int(labels[i]), n_cls, where(i))
    )
    total = index["col.total_frames"]
    _first_bad(total < 1, total > rules.MAX_FRAMES)(
        lambda i: rules.check_total_frames(int(total[i]), where(i))
    )
    for field, spec in meta["fields"].items():
        _check_extents(index, field, np.dtype(spec["dtype"]).itemsize, meta, where)
    _check_keypoint_shapes(index, meta, where)
    for split in meta["splits"]:
        members = index[f"split.{split}"]
        if len(members) and not (0 <= members.min() and members.max() < len(names)):
            raise StoreError(f"{source}: split {split!r} points past the {len(names)} samples")


def _first_bad(*masks: np.ndarray):
    """Call `raise_for(i)` on the first sample any mask flags (it raises with the rule's own
    message); a flagged sample the rule lets through is refused all the same."""
    bad = np.logical_or.reduce(masks)

    def run(raise_for) -> None:
        if bad.any():
            i = int(np.argmax(bad))
            try:
                raise_for(i)
            except AnnotationError as err:
                raise StoreError(str(err)) from None
            raise StoreError(f"sample {i} breaks a sanity bound")

    return run


def _check_extents(index: dict, field: str, itemsize: int, meta: dict, where) -> None:
    """Offsets aligned, shapes non-negative, each array inside arrays.bin (computed so that
    no product wraps around: a float bound first, exact int64 products after)."""
    offset, shape = index[f"field.{field}.offset"], index[f"field.{field}.shape"]
    present, size = offset >= 0, meta["arrays_bytes"]
    upper = np.prod(np.maximum(shape, 0).astype(np.float64), axis=1) * itemsize
    _first_bad(offset < -1, present & (offset % ALIGN != 0), (shape < 0).any(1))(
        lambda i: _raise(where(i), f"{field!r} at offset {offset[i]} ({ALIGN}-byte aligned, or "
                                   f"-1 if absent) with shape {shape[i].tolist()}")
    )  # fmt: skip
    _first_bad(~present & (shape != 0).any(1), present & (upper > size - offset))(
        lambda i: _raise(where(i), f"{field!r} of shape {shape[i].tolist()} at offset "
                                   f"{offset[i]} does not fit in the {size} bytes of arrays.bin")
    )  # fmt: skip
    # every product now fits in int64: each is at most arrays_bytes
    ends = offset + np.prod(shape, axis=1) * itemsize
    _first_bad(present & (ends > size))(lambda i: _raise(where(i), f"{field!r} overruns"))


def _check_keypoint_shapes(index: dict, meta: dict, where) -> None:
    """Every sample has keypoints (M, T, V, C) within the bounds; keypoint-like fields agree."""
    kp = index["field.keypoint.shape"]
    _first_bad(index["field.keypoint.offset"] < 0)(
        lambda i: _raise(where(i), "misses field 'keypoint'")
    )
    joints = rules.layout_joints(meta["top"].get("layout"))
    m, t, v, c = kp.T
    v_bad = v != joints if joints else (v < 1) | (v > rules.MAX_JOINTS)
    _first_bad(
        (m < 1) | (m > rules.MAX_BODIES), v_bad,
        (t < 1) | (t > rules.MAX_FRAMES), (c < 1) | (c > rules.MAX_CHANNELS),
    )(lambda i: rules.check_keypoint_shape(tuple(kp[i].tolist()), joints, where(i)))  # fmt: skip
    for field, dims in rules.LIKE_KEYPOINT.items():
        if field not in meta["fields"] or meta["fields"][field]["ndim"] < dims:
            continue
        shape = index[f"field.{field}.shape"][:, :dims]
        present = index[f"field.{field}.offset"] >= 0
        _first_bad(present & (shape != kp[:, :dims]).any(1))(
            lambda i, f=field, s=shape: _raise(
                where(i), f"{f} shape {s[i].tolist()} does not match keypoint {kp[i].tolist()}"
            )
        )


def _raise(where: str, problem: str) -> None:
    raise StoreError(f"{where}: {problem}; the store is corrupt")
