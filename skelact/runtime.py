"""Process setup of a run: seeds, CPU threads, and the process group under torchrun."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist

from skelact.engine import pick_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(tcfg, world: int) -> None:
    """CPU threads per process: the cores the DataLoader workers leave free. Oversubscribed
    cores make torch's OpenMP threads spin: on 2 busy cores, 2 threads ran an epoch 10x slower
    than 1."""
    n = tcfg.threads
    if n == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        n = max(1, (cores or 1) // world - tcfg.num_workers)
    torch.set_num_threads(int(n))


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), world, device
