"""Which container for the skeleton store: numpy memory maps (skelact's) vs HDF5 (h5py).

    pip install h5py   # for this comparison only; skelact does not use it
    python tools/bench_store.py [--samples 10000] [--tmp /tmp/skelact_store_bench] [--store-only]

Writes the same samples (real NTU bodies, (2, T, 25, 3) float32) to a skelact store and to one
HDF5 file (one flat float32 dataset plus offsets and shapes: the usual way to hold ragged
arrays in HDF5; a dataset per sample is far slower to write and open). Then, side by side:
write time; random-order read time per sample (page cache warm, each read returns an owned
float32 array, as a Dataset's transforms need); the summed PSS of the parent (which opened
the file and read every sample) and 3 forked reader processes that each read every sample,
with its anonymous part (Pss_Anon: what no file backs); and whether a file opened before
the fork reads correctly in the forked children at the same time (DataLoader workers do
exactly this).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_memory import memory_kib, random_names, real_bodies  # noqa: E402


def samples(n: int):
    rng = np.random.default_rng(0)
    bodies = real_bodies()
    for name in random_names(n, "ntu60", rng):
        yield name, bodies[rng.integers(len(bodies))]


def write_store(path: Path, n: int) -> None:
    from skelact.data.formats.store_write import StoreWriter

    with StoreWriter(path) as w:
        for name, kp in samples(n):
            w.add({"frame_dir": name, "label": 0, "keypoint": kp, "total_frames": kp.shape[1]})
        w.close({"all": []})


def write_h5(path: Path, n: int) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_dataset("keypoint", (0,), np.float32, maxshape=(None,), chunks=(65536,))
        offsets, shapes, pos = [], [], 0
        for _, kp in samples(n):
            flat = kp.ravel()
            data.resize((pos + flat.size,))
            data[pos : pos + flat.size] = flat
            offsets.append(pos)
            shapes.append(kp.shape)
            pos += flat.size
        f["offset"], f["shape"] = np.asarray(offsets), np.asarray(shapes)


class H5Reader:
    def __init__(self, path: Path):
        import h5py

        self.f = h5py.File(path, "r")
        self.data = self.f["keypoint"]
        self.offset, self.shape = self.f["offset"][:], self.f["shape"][:]

    def __len__(self) -> int:
        return len(self.offset)

    def __getitem__(self, i: int) -> np.ndarray:
        n = int(np.prod(self.shape[i]))
        return self.data[self.offset[i] : self.offset[i] + n].reshape(self.shape[i])


class StoreReader:
    def __init__(self, path: Path):
        from skelact.data.formats.store import SkeletonStore

        self.store = SkeletonStore(path)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array(self.store.array(i, "keypoint"))  # an owned copy


def read_time(reader, order: np.ndarray) -> float:
    for i in order[:200]:
        reader[i]  # warm up
    start = time.perf_counter()
    for i in order:
        reader[i]
    return (time.perf_counter() - start) / len(order) * 1e6  # µs per sample


def _read_all(reader, start: int, out) -> None:
    total = 0.0
    for i in range(len(reader)):
        total += float(reader[(i + start) % len(reader)][0, 0, 0, 0])
    out.put((os.getpid(), total))
    time.sleep(1.0)  # stay alive while the parent samples memory


def forked_readers(reader, procs: int = 3) -> tuple[float, float, bool]:
    """Summed PSS and Pss_Anon (MiB) of the parent, which opened `reader` and read every
    sample once, and of `procs` forked children reading everything through it, taken when
    every child has read everything (each then holds what it touched); and whether every
    child saw the right values."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    expect = sum(float(reader[i][0, 0, 0, 0]) for i in range(len(reader)))
    kids = [ctx.Process(target=_read_all, args=(reader, k * 997, q)) for k in range(procs)]
    for k in kids:
        k.start()
    results = [q.get(timeout=600) for _ in kids]
    mems = [memory_kib(pid) for pid in [os.getpid(), *(pid for pid, _ in results)]]
    pss, anon = sum(m[0] for m in mems) / 1024, sum(m[2] for m in mems) / 1024
    for k in kids:
        k.join()
    ok = all(abs(t - expect) < 1e-3 * max(1.0, abs(expect)) for _, t in results)
    return pss, anon, ok and all(k.exitcode == 0 for k in kids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--samples", type=int, default=10_000, help="samples written to each format"
    )
    parser.add_argument(
        "--tmp", default="/tmp/skelact_store_bench", help="scratch folder for the files"
    )
    parser.add_argument("--store-only", action="store_true", help="skip HDF5 (no h5py)")
    from skelact.cli import show_defaults

    show_defaults(parser)
    args = parser.parse_args()
    tmp = Path(args.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        paths = {"numpy memmap store": tmp / "s.store", "HDF5 (h5py)": tmp / "s.h5"}
        if args.store_only:
            paths.pop("HDF5 (h5py)")
        writers = {"numpy memmap store": write_store, "HDF5 (h5py)": write_h5}
        readers = {"numpy memmap store": StoreReader, "HDF5 (h5py)": H5Reader}
        order = np.random.default_rng(1).permutation(args.samples)
        print(f"{args.samples} samples of real NTU bodies, (2, T, 25, 3) float32")
        for name, path in paths.items():
            start = time.perf_counter()
            writers[name](path, args.samples)
            wrote = time.perf_counter() - start
            size = (
                sum(f.stat().st_size for f in path.iterdir())
                if path.is_dir()
                else (path.stat().st_size)
            )
            reader = readers[name](path)
            us = read_time(reader, order)
            pss, anon, ok = forked_readers(reader)
            print(f"{name:20s} write {wrote:5.1f} s ({size / 1e6:.0f} MB); read {us:6.1f} µs a "
                  f"sample; parent + 3 forked readers: {pss:6.0f} MiB summed PSS, {anon:6.0f} "
                  f"MiB of it anonymous (Pss_Anon); opened before fork: "
                  f"{'correct' if ok else 'WRONG VALUES OR CRASH'}")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
