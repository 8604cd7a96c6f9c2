"""Converting an annotation pickle into a store in bounded memory.

The C unpickler keeps every object it builds in its memo until the load ends, so the raw bytes
of every array of a pickle stay in memory at once (1.8x the file for protocol 2, which holds
bytes as latin-1 text). `_StreamingUnpickler` is the pure-Python unpickler with the same
restrictions as `SafeUnpickler` whose byte and long text opcodes copy their payload, a piece at
a time, straight into the store's arrays.bin and leave a small `_Blob` in its place (and in the
memo). An array built on a blob just records where its bytes lie; memory holds the samples'
metadata, never the arrays.
"""

from __future__ import annotations

import codecs
import math
import os
import pickle
from pathlib import Path
from struct import unpack
from typing import Any

import numpy as np

from skelact.data.formats.pickles import check_global
from skelact.data.formats.schema import AnnotationError
from skelact.data.formats.store_write import ArrayRef, StoreWriter
from skelact.files import byte_progress

MIN_BLOB = 256  # payloads from this many bytes go to disk; smaller ones stay in memory
CHUNK = 1 << 20  # bytes read at a time from a long payload
MAX_FRAME = 1 << 24  # pickle writes 64 KiB frames; a larger one would be read whole


class _Blob:
    """Bytes (or, `text`, latin-1 text as protocol 2 holds bytes) already in arrays.bin."""

    __slots__ = ("ref", "text")

    def __init__(self, ref: ArrayRef, text: bool):
        self.ref, self.text = ref, text


class _Stub:
    """Stands for an array while unpickling: its bytes lie in the store's arrays.bin."""

    __slots__ = ("writer", "ref", "value")

    def __init__(self, writer: StoreWriter):
        self.writer, self.ref, self.value = writer, None, None

    def __setstate__(self, state: tuple) -> None:
        shape, dtype, fortran, raw = state[-4:]  # (version,) shape, dtype, is_fortran, bytes
        self.put(raw, dtype, shape, "F" if fortran else "C")

    def put(self, raw, dtype, shape, order: str, axis_order=None) -> None:
        dtype, shape = np.dtype(dtype), tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no wrap-around
        if isinstance(raw, _Blob):
            if raw.text or raw.ref.shape[0] != nbytes:
                raise AnnotationError(f"array of {shape} {dtype} with {raw.ref.shape[0]} bytes")
            plain = order == "C" or sum(s > 1 for s in shape) <= 1
            if shape and plain and axis_order is None:  # the bytes are the array as stored
                self.ref = ArrayRef(raw.ref.offset, shape, dtype, raw.ref.crc)
                return
            raw = self.writer.read(raw.ref)
        if not isinstance(raw, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
            raise AnnotationError("arrays of Python objects cannot be converted")
        arr = np.frombuffer(raw, dtype)
        if order == "K" and axis_order is not None:  # numpy 2 pickles a permuted view as is
            arr = arr.reshape(shape, order="C").transpose(axis_order)
        else:
            arr = arr.reshape(shape, order=order)
        if not shape:  # a 0-d array: a scalar, kept as a value
            self.value = arr.copy()
        else:
            self.ref = self.writer.write_array(np.ascontiguousarray(arr))


class _StreamingUnpickler(pickle._Unpickler):
    """The restricted unpickler (`SafeUnpickler.find_class`) writing payloads to `writer`."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, source: str, writer: StoreWriter):
        super().__init__(file)
        self.source, self.writer = source, writer

    def find_class(self, module: str, name: str) -> Any:
        check_global(self.source, module, name)  # raises for anything unsafe
        if name == "_reconstruct":
            return self._reconstruct
        if name == "_frombuffer":
            return self._frombuffer
        if name == "encode":
            return self._encode
        return super().find_class(module, name)

    def _reconstruct(self, subtype, shape, dtype) -> _Stub:
        if subtype is not np.ndarray:
            raise AnnotationError(f"{self.source}: refused to build an array of {subtype!r}")
        return _Stub(self.writer)

    def _frombuffer(self, buf, dtype, shape, order, axis_order=None) -> _Stub:
        stub = _Stub(self.writer)
        stub.put(buf, dtype, shape, order, axis_order)
        return stub

    def _encode(self, obj, encoding="utf-8", errors="strict"):
        """`_codecs.encode`: protocol 2 writes bytes as encode(latin-1 text, "latin1")."""
        if isinstance(obj, _Blob):
            if obj.text and codecs.lookup(encoding).name == "iso8859-1":
                return _Blob(obj.ref, text=False)  # the blob holds those bytes already
            obj = materialize(obj, self.writer)
        return codecs.encode(obj, encoding, errors)

    def _chunks(self, n: int):
        while n > 0:
            piece = self.read(min(n, CHUNK))
            if len(piece) < min(n, CHUNK):
                raise pickle.UnpicklingError("pickle data was truncated")
            n -= len(piece)
            yield piece

    def _payload(self, size_format: str, text: bool) -> None:
        (n,) = unpack(size_format, self.read(8 if size_format == "<Q" else 4))
        if n < MIN_BLOB:
            raw = self.read(n)
            self.append(str(raw, "utf-8", "surrogatepass") if text else raw)
        elif not text:
            self.append(_Blob(self.writer.write_chunks(self._chunks(n)), text=False))
        else:
            self.append(self._text(n))

    def _text(self, n: int) -> _Blob | str:
        """UTF-8 text of n bytes written as latin-1 (protocol 2's bytes); a text with other
        characters is a real string, returned as one."""
        decode = codecs.getincrementaldecoder("utf-8")("surrogatepass").decode
        chunks, rest = self._chunks(n), []

        def latin1():
            for piece in chunks:
                text = decode(piece)
                try:
                    yield text.encode("latin-1")
                except UnicodeEncodeError:
                    rest.append(text)
                    return

        ref = self.writer.write_chunks(latin1())
        if not rest:
            return _Blob(ref, text=True)
        rest += [decode(piece) for piece in chunks]
        return self.writer.read(ref).decode("latin-1") + "".join(rest)

    def _frame(self) -> None:
        (n,) = unpack("<Q", self.read(8))
        if n > MAX_FRAME:
            raise AnnotationError(f"{self.source}: a pickle frame of {n} bytes (at most 16 MiB)")
        self._unframer.load_frame(n)

    def _bytearray8(self) -> None:
        self._payload("<Q", text=False)
        if not isinstance(self.stack[-1], _Blob):
            self.stack[-1] = bytearray(self.stack[-1])

    dispatch[pickle.BINBYTES[0]] = lambda self: self._payload("<I", False)
    dispatch[pickle.BINBYTES8[0]] = lambda self: self._payload("<Q", False)
    dispatch[pickle.BYTEARRAY8[0]] = _bytearray8
    dispatch[pickle.BINUNICODE[0]] = lambda self: self._payload("<I", True)
    dispatch[pickle.BINUNICODE8[0]] = lambda self: self._payload("<Q", True)
    dispatch[pickle.FRAME[0]] = _frame


def materialize(v: Any, writer: StoreWriter) -> Any:
    """A blob read back as bytes or str; other values as they are."""
    if not isinstance(v, _Blob):
        return v
    raw = writer.read(v.ref)
    return raw.decode("latin-1") if v.text else raw


def _value(v: Any, writer: StoreWriter) -> Any:
    """A value of the unpickled data as the store keeps it: a stub's array read back (for
    validation and top-level data), blobs as bytes or str, containers recursively."""
    if isinstance(v, _Stub):
        if v.ref is None:
            return v.value
        r: ArrayRef = v.ref
        return np.frombuffer(writer.read(r), r.dtype).reshape(r.shape)
    if isinstance(v, _Blob):
        return materialize(v, writer)
    if isinstance(v, list):
        return [_value(x, writer) for x in v]
    if isinstance(v, tuple):
        return tuple(_value(x, writer) for x in v)
    if isinstance(v, dict):
        return {k: _value(x, writer) for k, x in v.items()}
    return v


def pickle_to_store(pkl: str | os.PathLike, out: str | os.PathLike, source: dict | None = None):
    """Convert an annotation pickle into the store `out`, streaming its arrays to disk."""
    pkl = Path(pkl)
    with StoreWriter(out, str(pkl)) as writer, open(pkl, "rb") as f:
        try:
            with byte_progress(f, pkl.stat().st_size, f"reading {pkl.name}"):
                data = _StreamingUnpickler(f, str(pkl), writer).load()  # restricted
        except AnnotationError:
            raise
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
            raise AnnotationError(f"{pkl}: not a readable pickle ({err})") from err
        if not isinstance(data, dict) or "annotations" not in data or "split" not in data:
            raise AnnotationError(f"{pkl}: expected a dict with keys 'split' and 'annotations'")
        if not isinstance(data["annotations"], list) or not data["annotations"]:
            raise AnnotationError(f"{pkl}: 'annotations' must be a non-empty list")
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                writer.add(ann)  # raises, naming the sample
            refs = {k: v.ref for k, v in ann.items() if isinstance(v, _Stub) and v.ref}
            writer.add({k: _value(v, writer) for k, v in ann.items()}, refs)
        top = {k: _value(v, writer) for k, v in data.items() if k not in ("split", "annotations")}
        return writer.close(_value(data["split"], writer), source=source, **top)
