"""Process setup of a run: the device and the precision it trains in, seeds, CPU threads, and
the process group under torchrun with the collectives the training loop uses (statistics
reduced across ranks, bounded waits); one training at a time in a run directory, and ranks
that stop with their launcher."""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


def pick_device(name: str = "auto", setting: str = "trainer.device") -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else is passed to torch. A name
    torch does not know, or a GPU this machine lacks: ValueError naming `setting`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError:
        raise ValueError(f"{setting}={name} is not a device: auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ValueError(f"{setting}={name}: torch sees {have} here; use auto or cpu")
    return device


def native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """trainer.precision -> the dtype training steps autocast to; None: float32 throughout.

    auto: bfloat16 on a CPU that computes it in hardware (about 1.7x the default's training
    throughput there; BENCHMARKS.md, issue 17), float32 elsewhere, CUDA included. Weights,
    gradients, the optimizer and evaluation stay float32 either way."""
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if device.type == "cpu" and native_bf16() else None
    if precision != "bf16":
        raise SystemExit(f"trainer.precision={precision!r}: choose auto, fp32 or bf16")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SystemExit(f"trainer.precision=bf16: {device} has no bfloat16; use fp32")
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_info(key: str) -> str | None:
    """The first value of `key` ("model name", "flags") in /proc/cpuinfo; None where there is
    none (as on macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def run_environment(precision: str, device: torch.device) -> dict:
    """What a run's numbers depend on besides its config and seed, for metrics.json.

    The same seed gives the same run on the same machine, but not across machines: under
    `trainer.precision=auto` a CPU with bfloat16 hardware trains in bfloat16 and one without it
    in float32, and AMX and AVX512-BF16 round differently (BENCHMARKS.md, issue 17)."""
    dtype = train_dtype(precision, device)
    env = {
        "torch": torch.__version__,
        "device": str(device),
        "training_dtype": "float32" if dtype is None else str(dtype).replace("torch.", ""),
        "cpu": cpu_info("model name"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_hardware": native_bf16(),
        # which bfloat16 units: AMX tiles and AVX512-BF16 round a product's sum differently
        "cpu_bf16_flags": sorted(BF16_FLAGS & set((cpu_info("flags") or "").split())),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def set_threads(tcfg, world: int) -> None:
    """CPU threads per process: the cores the DataLoader workers leave free. Oversubscribed
    cores make torch's OpenMP threads spin: on 2 busy cores, 2 threads ran an epoch 10x slower
    than 1."""
    n = tcfg.threads
    if n == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        n = max(1, (cores or 1) // world - tcfg.num_workers)
    torch.set_num_threads(int(n))


def backend_for(device: torch.device) -> str:
    """The process group's backends: on GPUs NCCL for CUDA tensors and gloo for CPU ones (a
    group with NCCL alone refuses every CPU tensor, and `wait_for_rank0` waits on the CPU)."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init_distributed(device_name: str, timeout_min: float = 30) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun.
    `timeout_min` bounds every collective, the waits for rank 0 included."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if "LOCAL_RANK" in os.environ:  # launched by torchrun
        exit_with_launcher()
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":  # before the group: NCCL binds each rank to its current GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), timeout=timedelta(minutes=timeout_min))
    return dist.get_rank(), world, device


def reduce_stats(stats: dict, world: int, device: torch.device) -> dict:
    """One epoch's "loss" and "acc" averaged over the ranks, each weighted by its "seen"
    samples. The sums travel on the training device (NCCL reduces CUDA tensors only)."""
    if world == 1:
        return stats
    seen = stats["seen"]
    t = torch.tensor(
        [stats["loss"] * seen, stats["acc"] * seen, seen], dtype=torch.float64, device=device
    )
    dist.all_reduce(t)
    t = t.cpu()
    return {**stats, "loss": (t[0] / t[2]).item(), "acc": (t[1] / t[2]).item()}


def wait_for_rank0(what: str, timeout_min: float) -> None:
    """Every rank waits here until all arrive: the others wait while rank 0 does `what` alone
    (validation, checkpoints), on the CPU backend (not inside an NCCL collective) and for at
    most the process group's timeout, then fail naming the wait."""
    rank = dist.get_rank()
    try:
        dist.monitored_barrier(timeout=timedelta(minutes=timeout_min), wait_all_ranks=True)
    except RuntimeError as err:
        if rank == 0:
            why = f"rank 0 {what}, but another rank stopped waiting for it"
        else:
            why = f"rank {rank} waited in vain for rank 0, which {what}"
        raise SystemExit(
            f"skelact train: {why}. Ranks wait at most trainer.dist_timeout_min={timeout_min} "
            f"min for each other: raise it if rank 0's validation or saving is slow ({err})"
        ) from err


def exit_with_launcher(every: float = 1.0) -> None:
    """Under torchrun: end this process when its launcher ends. torchrun starts the ranks in
    sessions of their own, so `kill -9` of torchrun (or of its process group) left them
    training, writing the run directory that a resume then shared. A thread checks the parent
    every `every` seconds; checkpoints are written atomically, so stopping anywhere is safe."""
    if any(t.name == "launcher-watch" for t in threading.enumerate()):
        return  # one watcher a process (a fusion fit's run calls this again)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        rank = os.environ.get("RANK", "?")
        sys.stderr.write(
            f"skelact train: rank {rank}: its launcher (pid {parent}) ended, so does this "
            "process; resume with trainer.resume=true\n"
        )
        sys.stderr.flush()
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


class RunDirLock:
    """One training at a time in a run directory: rank 0 holds a lock on it while it trains
    (flock; the kernel drops it however the process ends), taken when the run starts if the
    directory exists (a resume, a run replacing another), else as soon as training creates
    it. A second training into it, such as a resume started while the first still runs, is
    refused. Nothing to hold off Unix and on the other ranks."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir, self.fd = Path(run_dir), None

    def acquire(self) -> None:
        """Lock the directory if it exists and this process does not hold it yet."""
        try:
            import fcntl
        except ImportError:  # Windows
            return
        if self.fd is not None or os.environ.get("RANK", "0") != "0" or not self.run_dir.is_dir():
            return
        fd = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SystemExit(
                f"{self.run_dir}: another training is running in this directory; wait for it "
                "to end (or stop it), or train into another one"
            ) from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # drops the lock
            self.fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
