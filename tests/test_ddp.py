"""The collectives of a torchrun training on GPUs, run on CPU: two real processes (spawn) in a
process group whose device map mirrors NCCL's, with gloo standing in for NCCL."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from skelact.runtime import backend_for, reduce_stats, wait_for_rank0

STATS = [  # rank 0 saw 3 samples at loss 1.0, rank 1 one at loss 3.0
    {"loss": 1.0, "acc": 0.5, "seen": 3, "seconds": 1.0},
    {"loss": 3.0, "acc": 1.0, "seen": 1, "seconds": 1.0},
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # what runtime starts on GPUs, NCCL swapped for gloo (no GPU here): same device map
    backend = backend_for(torch.device("cuda")).replace("nccl", "gloo")
    dist.init_process_group(backend, rank=rank, world_size=2, timeout=timedelta(seconds=3))
    report = {"backend": backend}
    nccl_only = dist.new_group(backend="cuda:gloo")  # NCCL's map: CUDA tensors only
    try:  # the reduction before the fix: a CPU tensor into a CUDA-only group
        dist.all_reduce(torch.ones(3, dtype=torch.float64), group=nccl_only)
        report["cpu_into_cuda_only"] = "passed"
    except RuntimeError as err:
        report["cpu_into_cuda_only"] = str(err)
    report["reduced"] = reduce_stats(STATS[rank], 2, torch.device("cpu"))
    wait_for_rank0("validates", 3 / 60)  # both arrive: no wait
    if rank == 0:
        time.sleep(6)  # a validation longer than the 3 s the ranks wait for each other
    start = time.perf_counter()
    try:
        wait_for_rank0("validates and saves epoch 1", 3 / 60)
        report["late"] = "no error"
    except SystemExit as err:
        report["late"] = str(err)
    report["waited_s"] = time.perf_counter() - start
    queue.put((rank, report))


@pytest.fixture(scope="module")
def reports() -> dict[int, dict]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    out = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    return out


def test_cpu_statistics_need_a_cpu_backend_beside_nccl(reports):
    for rank in (0, 1):
        assert reports[rank]["backend"] == "cpu:gloo,cuda:gloo"
        # the failure torchrun on GPUs met at the end of the first epoch, reproduced
        assert (
            "No backend type associated with device type cpu"
            in (reports[rank]["cpu_into_cuda_only"])
        )


def test_epoch_statistics_are_sample_weighted_means_over_ranks(reports):
    for rank in (0, 1):
        got = reports[rank]["reduced"]
        assert got["loss"] == pytest.approx((3 * 1.0 + 1 * 3.0) / 4)
        assert got["acc"] == pytest.approx((3 * 0.5 + 1 * 1.0) / 4)
        assert got["seen"] == STATS[rank]["seen"]


def test_waiting_for_rank_0_is_bounded_and_named(reports):
    late = reports[1]["late"]
    assert "rank 1 waited in vain for rank 0, which validates and saves epoch 1" in late
    assert "trainer.dist_timeout_min" in late
    assert 2.5 < reports[1]["waited_s"] < 5.5  # the 3 s bound, not rank 0's 6 s
    assert "another rank stopped waiting" in reports[0]["late"]


LAUNCHER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], start_new_session=True,
                         stderr=open(sys.argv[2], "w"))  # as torchrun starts its ranks
print(child.pid, flush=True)
time.sleep(120)
"""
RANK = """
import sys, time
from skelact.runtime import exit_with_launcher
exit_with_launcher(0.05)
sys.stderr.write("ready\\n"); sys.stderr.flush()
time.sleep(120)
"""


def test_a_rank_ends_with_its_launcher(tmp_path):
    """kill -9 of torchrun left its ranks training (they run in sessions of their own), and
    writing the run directory a resume then shared: now each ends within its check period."""
    import signal
    import subprocess
    import sys

    err = tmp_path / "rank.err"
    env = {**os.environ, "RANK": "1"}
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, RANK, str(err)],
                                stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    pid = int(launcher.stdout.readline())
    deadline = time.monotonic() + 60
    while "ready" not in err.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(pid, 0)  # the rank runs
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the rank outlived its launcher")
    assert f"rank 1: its launcher (pid {launcher.pid}) ended" in err.read_text()


def test_one_training_at_a_time_in_a_run_directory(tmp_path, monkeypatch):
    from skelact.runtime import RunDirLock

    monkeypatch.delenv("RANK", raising=False)
    run = tmp_path / "runs" / "a"
    with RunDirLock(run) as first:  # no folder yet: nothing made, nothing held
        assert not run.parent.exists() and first.fd is None
        run.mkdir(parents=True)  # as training makes it
        first.acquire()
        with pytest.raises(SystemExit, match="a: another training is running in this"):
            with RunDirLock(run):
                pass
        monkeypatch.setenv("RANK", "1")  # only rank 0 holds it
        with RunDirLock(run) as other:
            assert other.fd is None
        monkeypatch.delenv("RANK")
    with RunDirLock(run) as again:  # released when the first ended
        assert again.fd is not None
