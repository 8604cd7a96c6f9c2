"""Memory and speed of `skelact train` at NTU scale: peak PSS of all processes of a run.

    python tools/bench_memory.py --case ntu60 --workers 2 [--tmp /tmp/skelact_mem]
    python tools/bench_memory.py --case ntu60 --ddp 2
    python tools/bench_memory.py --case ntu120 --workers 2 [--test-samples 16000]
    python tools/bench_memory.py --case prepare --files 4000
    python tools/bench_memory.py --case ntu60 --workers 2 -- modality=skeleton_4s

Builds an NTU60-sized (56,578 samples) or NTU120-sized (113,945) annotation store from the
real files in ../shared/data/ntu/skeletons (their bodies repeated under random valid NTU names,
two bodies per sample, float32 keypoints as in pyskl's ntu*_3danno.pkl), or its pyskl pickle
(--pickle: the run then includes the one-time conversion). Then runs one training epoch plus
the final evaluation through the real CLI (`skelact train`, or torchrun) in a subprocess and
samples, every second, the PSS (proportional set size: shared pages divided among their
sharers) of every process of the run from /proc/PID/smaps_rollup. Prints the peak of the sum
during training and evaluation, the epoch time, samples/s, and beside them the model-only
training throughput (tools/bench_train.py's loop, same threads, same shapes) and the data path
alone (the run's DataLoader without the model). Files go under --tmp and are deleted after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's skelact, also for the subprocesses (cwd ROOT)
REAL = ROOT.parent / "shared" / "data" / "ntu" / "skeletons"
SIZES = {"ntu60": 56_578, "ntu120": 113_945}


def random_names(n: int, dataset: str, rng: np.random.Generator) -> list[str]:
    """n distinct valid NTU names of `dataset`; xsub membership as in the real protocol."""
    from skelact.data.sources.ntu import NTU60_XSUB_TRAIN_SUBJECTS, NTU120_XSUB_TRAIN_SUBJECTS

    setups, actions, subjects = (17, 60, 40) if dataset == "ntu60" else (32, 120, 106)
    train = sorted(NTU60_XSUB_TRAIN_SUBJECTS if dataset == "ntu60" else NTU120_XSUB_TRAIN_SUBJECTS)
    test = [s for s in range(1, subjects + 1) if s not in train]
    p_train = 40_091 / 56_578 if dataset == "ntu60" else 63_026 / 113_945
    names: set[str] = set()
    while len(names) < n:
        pool = train if rng.random() < p_train else test
        s, c, r = rng.integers(1, setups + 1), rng.integers(1, 4), rng.integers(1, 3)
        p, a = pool[rng.integers(len(pool))], rng.integers(1, actions + 1)
        names.add(f"S{s:03d}C{c:03d}P{p:03d}R{r:03d}A{a:03d}")
    return sorted(names)


def real_bodies() -> list[np.ndarray]:
    """(2, T, 25, 3) float32 per real file: its main body, and another file's as the second."""
    from skelact.data.sources.ntu_skeleton import load_skeleton

    files = sorted(REAL.glob("*.skeleton"))
    if not files:
        raise SystemExit(f"no real NTU files in {REAL}")
    first = [load_skeleton(f, 1)[0] for f in files]  # (T, 25, 3)
    out = []
    for k, body in enumerate(first):
        other = first[(k + 1) % len(first)][: len(body)]
        second = np.zeros_like(body)
        second[: len(other)] = other
        out.append(np.stack([body, second]))
    return out


def build_store(out: Path, dataset: str, n: int, pickle_out: bool) -> dict:
    """Write the benchmark store (or pickle) while streaming; returns its size and splits."""
    from skelact.data.formats.store_write import StoreWriter, disk_size
    from skelact.data.sources.ntu import ntu_classes, split_of

    rng = np.random.default_rng(0)
    bodies = real_bodies()
    split: dict[str, list[str]] = {}
    start = time.perf_counter()
    with StoreWriter(out) as writer:
        for name in random_names(n, dataset, rng):
            kp = bodies[rng.integers(len(bodies))]
            label = int(name[-3:]) - 1
            writer.add({"frame_dir": name, "label": label, "keypoint": kp,
                        "total_frames": kp.shape[1]})  # fmt: skip
            for proto, part in split_of(name, dataset).items():
                split.setdefault(f"{proto}_{part}", []).append(name)
        test = split["xsub_val"]
        split["xsub_val_16k"] = [test[i] for i in sorted(rng.permutation(len(test))[:16_000])]
        writer.close(split, layout="ntu25", dataset=dataset, classes=ntu_classes(dataset))
    return {"bytes": disk_size(out), "seconds": time.perf_counter() - start,
            "splits": {k: len(v) for k, v in split.items()}}  # fmt: skip


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def memory_kib(pid: int) -> tuple[int, int, int]:
    """(PSS, RSS, Pss_Anon) of one process in KiB, zeros once it is gone. Pss_Anon is the
    part no file backs (what the kernel cannot drop; the rest of PSS is page cache of mapped
    files, such as the store's arrays.bin)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0, 0
    fields = dict(line.split(":", 1) for line in text.splitlines()[1:])
    kib = {k: int(v.split()[0]) for k, v in fields.items() if k in ("Pss", "Rss", "Pss_Anon")}
    return kib["Pss"], kib["Rss"], kib.get("Pss_Anon", 0)


def _role(pid: int) -> str:
    """A short name for a process of the run: its command line's module or script."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [a.decode(errors="replace") for a in args if a]
    mods = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-m"]
    tail = " ".join(words[1:3]) if not mods else mods[-1]
    return f"{pid}:{tail[:30]}"


class Sampler(threading.Thread):
    """Every `period` s: summed PSS of the tree of `pid`, per phase (set from outside)."""

    def __init__(self, pid: int, period: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.period, self.phase = pid, period, "train"
        self.peak: dict[str, float] = {}
        self.peak_anon: dict[str, float] = {}  # summed Pss_Anon, at its own peak
        self.at_peak: dict[str, list] = {}  # (process, PSS GiB) at each phase's peak
        self.max_procs = 0
        self.max_rss = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            tree = process_tree(self.pid)
            mems = [memory_kib(p) for p in tree]
            pss = sum(m[0] for m in mems) / 2**20  # GiB
            anon = sum(m[2] for m in mems) / 2**20
            self.peak_anon[self.phase] = max(self.peak_anon.get(self.phase, 0.0), anon)
            if pss > self.peak.get(self.phase, 0.0):
                self.peak[self.phase] = pss
                self.at_peak[self.phase] = [
                    (_role(p), m[0] / 2**20) for p, m in zip(tree, mems, strict=True) if m[0]
                ]
            self.max_rss = max([self.max_rss] + [m[1] / 2**20 for m in mems])
            self.max_procs = max(self.max_procs, sum(m[0] > 0 for m in mems))
            self.done.wait(self.period)


def run_measured(
    cmd: list[str], log_path: Path, period: float = 1.0, cwd: Path = ROOT
) -> tuple[Sampler, float]:
    """Run `cmd`, sampling its memory; the phase turns to "eval" after the epoch's log line."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=cwd)  # fmt: skip
        sampler = Sampler(proc.pid, period)
        sampler.start()
        for line in proc.stdout:
            log.write(line)
            if "epoch 1/1" in line:
                sampler.phase = "eval"
        proc.wait()
    sampler.done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log_path}")
    return sampler, time.perf_counter() - start


def model_only(threads: int, clip_len: int, batch: int, extra=()) -> float:
    """tools/bench_train.py's timed loop at the run's shapes and thread count."""
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_train import build, samples_per_second

    torch.set_num_threads(threads)
    model, cfg, specs = build([f"trainer.batch_size={batch}", *extra], torch.device("cpu"))
    x = {
        name: torch.randn(batch, 2, clip_len, 25, spec["channels"]) for name, spec in specs.items()
    }
    y = torch.randint(0, 60, (batch,))
    return samples_per_second(model, cfg, x, y, steps=15, warmup=2)


def data_only(overrides: list[str], batches: int) -> float:
    """Samples/s of the run's training DataLoader alone (workers, transforms, no model)."""
    from skelact.config import compose_config
    from skelact.data.run import Data, make_loader

    cfg = compose_config(overrides)
    data = Data(cfg)
    dataset, _ = data.dataset(cfg.data, cfg.data.train_split, train=True)
    loader = make_loader(dataset, cfg.trainer, True, seed=cfg.seed)
    it = iter(loader)
    next(it)  # workers started
    start, seen = time.perf_counter(), 0
    for k, batch in enumerate(it):
        seen += len(batch["label"])
        if k + 1 == batches:
            break
    return seen / (time.perf_counter() - start)


def _stored_count(path: Path) -> int | None:
    """How many samples the store at `path` holds, from its meta.json (opening the store would
    map its arrays in this process, which shares their pages with the run measured); None for
    a pickle or where there is none."""
    meta = path / "meta.json"
    return json.loads(meta.read_text())["num_samples"] if meta.is_file() else None


def train_case(args) -> None:
    dataset, tmp = args.case, Path(args.tmp)
    store = tmp / f"{dataset}.{'pkl' if args.pickle else 'store'}"
    n = args.samples or SIZES[dataset]
    have = _stored_count(store)
    if have is not None and have != n:  # another size's store: it would be measured as this one
        print(f"{store} holds {have} samples, not {n}: building it again")
        shutil.rmtree(store)
    if not store.exists():
        info = build_store(store, dataset, n, args.pickle)
        print(f"built {store}: {info['bytes'] / 1e9:.2f} GB, {n} samples, "
              f"splits {info['splits']} in {info['seconds']:.0f} s")  # fmt: skip
    else:
        print(f"reusing {store} ({n} samples)")
    world = max(1, args.ddp)
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // world - args.workers)
    rate_model = model_only(threads, 32, 32, args.overrides)
    overrides = [f"data={dataset}_xsub", f"data.ann_file={store}", "trainer.epochs=1",
                 f"trainer.num_workers={args.workers}", "trainer.progress=false",
                 "trainer.device=cpu", f"data.test_split={args.test_split}",
                 *args.overrides]  # fmt: skip
    rate_data = data_only(overrides, 60) if not args.pickle else None
    how = f"torchrun {args.ddp} ranks x {args.workers} workers" if args.ddp else (
        f"{args.workers} workers")  # fmt: skip
    print(f"case {dataset}, {how}, {threads} torch thread(s) per process, {cores} cores")
    measure_run(overrides, args, tmp / "run", ROOT, rate_model * world, rate_data)
    if args.baseline:
        pkl = tmp / "baseline.pkl"
        if store.is_dir():
            from skelact.data.formats.pickles import store_to_pickle

            store_to_pickle(store, pkl)
        else:
            pkl = store
        print(f"baseline: the code in {args.baseline}, from the pickle {pkl}")
        base = [o if not o.startswith("data.ann_file") else f"data.ann_file={pkl}"
                for o in overrides]  # fmt: skip
        measure_run(base, args, tmp / "run_base", Path(args.baseline), rate_model * world, None)


def measure_run(overrides, args, run_dir: Path, code: Path, rate_model, rate_data) -> None:
    """One `skelact train` run (or torchrun) of `code`, measured; prints its figures."""
    overrides = [*overrides, f"hydra.run.dir={run_dir}"]
    if args.ddp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.ddp}", "-m", "skelact.train", *overrides]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "skelact.cli", "train", *overrides]
    shutil.rmtree(run_dir, ignore_errors=True)
    sampler, wall = run_measured(cmd, run_dir.with_suffix(".log"), cwd=code)
    sec = float(pd.read_csv(run_dir / "train_log.csv")["seconds"].iloc[-1])
    text = (run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else ""
    found = re.search(r"(\d+) train samples", text + run_dir.with_suffix(".log").read_text())
    n_train = int(found.group(1)) if found else 0  # the whole split; DDP ranks shard it
    print(f"  peak summed PSS: training {sampler.peak.get('train', 0):.2f} GiB, evaluation "
          f"{sampler.peak.get('eval', 0):.2f} GiB (of it anonymous, Pss_Anon: "
          f"{sampler.peak_anon.get('train', 0):.2f} / {sampler.peak_anon.get('eval', 0):.2f} "
          f"GiB); up to {sampler.max_procs} processes; "
          f"largest single-process RSS {sampler.max_rss:.2f} GiB")  # fmt: skip
    for phase, procs in sampler.at_peak.items():
        print(f"    at the {phase} peak: " + ", ".join(f"{r} {g:.2f}" for r, g in procs))
    data = f"; data path alone ({args.workers} workers, no model): {rate_data or 0:.1f} samples/s"
    print(f"  epoch {sec:.1f} s for {n_train} samples: {n_train / sec:.1f} samples/s end to end; "
          f"model alone {rate_model:.1f} samples/s: {n_train / sec / rate_model:.0%} of it"
          f"{data if rate_data else ''}")  # fmt: skip
    print(f"  whole run (train + evaluate {args.test_split}): {wall:.0f} s")


def prepare_case(args) -> None:
    """`skelact prepare ntu` on symlinked real files under random NTU120 names."""
    from skelact.data.sources.ntu import missing_samples

    tmp = Path(args.tmp)
    files = sorted(REAL.glob("*.skeleton"))
    rng = np.random.default_rng(1)
    missing = missing_samples("ntu120")
    rows = []
    for count in [int(c) for c in args.files.split(",")]:
        folder = tmp / f"skeletons{count}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        names = [n for n in random_names(count + 100, "ntu120", rng) if n not in missing]
        for k, name in enumerate(names[:count]):
            (folder / f"{name}.skeleton").symlink_to(files[k % len(files)])
        out = tmp / f"prepared{count}.store"
        cmd = [sys.executable, "-m", "skelact.cli", "prepare", "ntu", "--skeletons",
               str(folder), "--out", str(out), "--dataset", "ntu120",
               "--workers", str(args.workers)]  # fmt: skip
        sampler, wall = run_measured(cmd, tmp / f"prepare{count}.log", period=0.2)
        rows.append((count, sampler.peak["train"], sampler.max_rss, wall))
        print(f"prepare ntu, {count} files, {args.workers} workers: peak summed PSS "
              f"{sampler.peak['train']:.3f} GiB, largest single-process RSS "
              f"{sampler.max_rss:.3f} GiB, {wall:.0f} s")  # fmt: skip
        shutil.rmtree(folder)
        shutil.rmtree(out)
    if len(rows) > 1:
        (c0, p0, r0, _), (c1, p1, r1, _) = rows[0], rows[-1]
        n120 = 114_480  # NTU120 .skeleton files
        for what, a, b in (("summed PSS", p0, p1), ("largest RSS", r0, r1)):
            per_file = max(b - a, 0) / (c1 - c0)
            print(f"  {what}: {per_file * 2**20:.2f} KiB more per file -> NTU120 ({n120} "
                  f"files): about {b + per_file * (n120 - c1):.2f} GiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case",
        choices=["ntu60", "ntu120", "prepare"],
        required=True,
        help="ntu60 / ntu120: one training epoch on a store of that size; "
        "prepare: prepare ntu on --files files",
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader / parser workers")
    parser.add_argument("--ddp", type=int, default=0, help="torchrun ranks (0: no torchrun)")
    parser.add_argument("--pickle", action="store_true", help="train from a pyskl pickle")
    parser.add_argument("--test-split", default="xsub_val", help="or xsub_val_16k (smaller)")
    parser.add_argument("--files", default="1000,4000", help="prepare: file counts")
    parser.add_argument(
        "--baseline",
        help="also run this checkout's code on the same data as a "
        "pickle (e.g. the commit before the store), side by side",
    )
    parser.add_argument("--samples", type=int, help="fewer samples (a quick check of the script)")
    parser.add_argument("--tmp", default="/tmp/skelact_mem", help="scratch folder")
    parser.add_argument("--keep", action="store_true", help="keep the built store for reuse")
    parser.add_argument(
        "overrides", nargs="*", help="skelact train overrides (after --), e.g. modality=skeleton_4s"
    )
    from skelact.cli import show_defaults

    show_defaults(parser)
    args = parser.parse_args()
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    try:
        prepare_case(args) if args.case == "prepare" else train_case(args)
    finally:
        if not args.keep:
            shutil.rmtree(args.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
