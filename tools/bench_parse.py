"""Time skelact's NTU .skeleton parser against a plain line-by-line reader, in one run.

    python tools/bench_parse.py [--data DIR] [--rounds 20]

Both read the same real files from disk (the page cache after the first round) and build
per-body joint arrays; `load_skeleton` also selects and orders bodies. Prints MB/s for each,
their ratio, the throughput of a 2-process pool, and the projected time for all of NTU60.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import numpy as np

from skelact.data.sources.ntu_skeleton import load_skeleton

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ntu" / "skeletons"
NTU60_FILES = 56_880  # raw .skeleton files of NTU RGB+D 60, missing-skeleton samples included


def plain_reader(path: str) -> dict[str, np.ndarray]:
    """The reference: readline loop, float() per value, x y z kept -> {body ID: (frames, 25, 3)}."""
    bodies: dict[str, list] = {}
    with open(path) as f:
        for _ in range(int(f.readline())):
            for _ in range(int(f.readline())):
                body_id = f.readline().split()[0]
                joints = [
                    [float(v) for v in f.readline().split()][:3] for _ in range(int(f.readline()))
                ]
                bodies.setdefault(body_id, []).append(joints)
    return {k: np.array(v, dtype=np.float32) for k, v in bodies.items()}


def fast_reader(path: str) -> np.ndarray:
    return load_skeleton(path, max_bodies=2)


def best_rate(fn, files: list[str], rounds: int, trials: int = 3) -> float:
    """Best MB/s of CPU time over `trials` runs of `rounds` passes over the files.

    CPU time of this process (not wall time) so that other jobs on a shared machine do not
    distort the ratio.
    """
    size = sum(Path(f).stat().st_size for f in files) * rounds / 1e6
    best = float("inf")
    for _ in range(trials):
        start = time.process_time()
        for _ in range(rounds):
            for f in files:
                fn(f)
        best = min(best, time.process_time() - start)
    return size / best


def pool_rate(files: list[str], rounds: int, workers: int) -> float:
    """Wall-clock MB/s of `load_skeleton` in a pool, as prepare_ntu uses it (needs free cores)."""
    tasks = files * rounds
    size = sum(Path(f).stat().st_size for f in tasks) / 1e6
    with multiprocessing.Pool(workers) as pool:
        list(pool.imap(fast_reader, tasks[: workers * 4]))  # warm the workers up
        start = time.perf_counter()
        for _ in pool.imap(fast_reader, tasks, chunksize=8):
            pass
        return size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of .skeleton")
    parser.add_argument("--rounds", type=int, default=20, help="passes over the files per trial")
    from skelact.cli import show_defaults

    show_defaults(parser)
    args = parser.parse_args()
    files = sorted(str(p) for p in args.data.glob("*.skeleton"))
    if not files:
        raise SystemExit(f"no .skeleton files in {args.data}")
    mean_size = np.mean([Path(f).stat().st_size for f in files])
    print(f"{len(files)} files, mean {mean_size / 1e3:.1f} kB, {args.rounds} rounds x 3 trials")
    plain = best_rate(plain_reader, files, max(1, args.rounds // 4))
    fast = best_rate(fast_reader, files, args.rounds)
    one_wall = pool_rate(files, args.rounds, workers=1)
    two = pool_rate(files, args.rounds * 2, workers=2)
    print(f"plain line-by-line reader: {plain:7.1f} MB/s (CPU time)")
    print(f"skelact load_skeleton:     {fast:7.1f} MB/s (CPU time, {fast / plain:.2f}x plain)")
    print(f"load_skeleton, 1 worker:   {one_wall:7.1f} MB/s (wall time, pool of 1)")
    print(f"load_skeleton, 2 workers:  {two:7.1f} MB/s (wall time, {two / one_wall:.2f}x 1 worker)")
    total = NTU60_FILES * mean_size / 1e6
    print(
        f"projected NTU60 parse ({NTU60_FILES} files of this mean size, {total / 1e3:.1f} GB):\n"
        f"  1 worker {total / fast / 60:.1f} min; 2 workers {total / fast / 120:.1f} min if both "
        f"cores are free (ideal), {total / two / 60:.1f} min at the pool rate measured here; "
        f"plain reader, 1 worker: {total / plain / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
