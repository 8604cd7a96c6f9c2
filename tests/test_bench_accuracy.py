"""tools/bench_accuracy.py's tables: mean ± the sample std over seeds, SBU folds averaged, and
the comparison with earlier runs (--against)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tools.bench_accuracy import against, main, mean_std, table


def _run(dataset: str, seed: int, top1: float, test: str = "") -> dict:
    metrics = {"top1": top1, "top5": 0.99, "mean_class_accuracy": top1, "wall_s": 60.0}
    return {"dataset": dataset, "seed": seed, "metrics": metrics, "test": test}


def test_the_spread_over_seeds_is_the_sample_std():
    # BENCHMARKS' N-UCLA seeds: the population std said 0.6, the sample std is 0.75
    assert mean_std(np.array([91.2, 92.5, 91.2])) == "91.6 ± 0.8"
    assert mean_std(np.array([90.0])) == "90.0 ± n/a"
    results = [_run("nucla", s, v / 100) for s, v in enumerate([91.2, 92.5, 91.2])]
    # SBU: each seed's number is the mean of its folds (here 2 folds per seed)
    results += [
        _run("sbu", s, v / 100, f"fold{k}")
        for s in range(3)
        for k, v in enumerate((90 + s, 92 + s))
    ]
    rows = table(results, [0, 1, 2]).splitlines()
    assert rows[2].startswith("| nucla | 91.6 ± 0.8 | 91.2 / 92.5 / 91.2 |")
    assert rows[3].startswith("| sbu | 92.0 ± 1.0 | 91.0 / 92.0 / 93.0 |")


def test_against_compares_the_seeds_both_hold():
    """--against: per dataset, only the seeds both runs hold (SBU folds averaged first), each
    side's per-seed top-1 and mean, and the change; a dataset one side lacks is left out."""
    old = [_run("nucla", s, v / 100) for s, v in enumerate([91.0, 93.0, 92.0, 99.0])]
    old += [_run("kard", 0, 0.99)]
    new = [_run("nucla", s, v / 100) for s, v in enumerate([92.0, 92.5, 93.5])]
    new += [_run("sbu", 1, v / 100, f"f{k}") for k, v in enumerate((94.0, 96.0))]
    new += [_run("sbu", 2, 0.9, "f0")]  # its fold f1 failed: seed 2 is left out
    old += [_run("sbu", s, v / 100, f"f{k}") for s in (1, 2) for k, v in enumerate((93.0, 93.0))]
    rows = against(new, old).splitlines()
    nucla = "| 0 1 2 | 91.00 / 93.00 / 92.00 = 92.00 | 92.00 / 92.50 / 93.50 = 92.67 | +0.67 |"
    assert rows[2] == "| nucla " + nucla
    assert rows[3] == "| sbu | 1 | 93.00 | 95.00 | +2.00 |"
    assert len(rows) == 4  # no kard: these runs have none


def test_report_names_a_missing_file_before_anything_else(tmp_path, monkeypatch, capsys):
    """--report with an --against that is not there: an argparse error naming the file, not a
    traceback after the first table."""
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps([_run("kard", 0, 0.99)]))
    missing = tmp_path / "base.json"
    argv = ["bench_accuracy.py", "--report", str(runs), "--against", str(missing)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert f"no such file: {missing}" in captured.err and captured.out == ""


def test_a_sweep_ends_with_its_table_when_the_baseline_is_not_there(tmp_path, capsys):
    """--against names a sweep still running beside this one: the table, then a line saying
    how to compare later, not a traceback."""
    from tools.bench_accuracy import report

    missing = tmp_path / "base.json"
    report([_run("kard", 0, 0.99)], [0], str(missing))
    out = capsys.readouterr().out
    assert "| kard | 99.0 ± n/a | 99.0 |" in out
    assert f"--against {missing}: no such file; later: --report JSON --against it" in out


def test_stopping_the_benchmark_stops_its_training_runs():
    """Ctrl-C or SIGTERM of the benchmark used to leave its `skelact train` processes running,
    orphaned; now the running ones are terminated and no further one starts."""
    import threading
    import time

    from tools.bench_accuracy import Runs

    runs = Runs()
    out: list = []
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    thread = threading.Thread(target=lambda: out.append(runs.run(sleeper)))
    thread.start()
    for _ in range(100):
        if runs.procs:
            break
        time.sleep(0.05)
    (proc,) = runs.procs
    start = time.monotonic()
    runs.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - start < 10
    assert proc.poll() is not None and out[0][0] != 0  # terminated, not finished
    assert runs.run(sleeper) == (-1, "stopped") and not runs.procs


def test_a_failed_run_is_named_and_the_others_are_kept(tmp_path, capsys):
    """One run failing (here: its annotation file is missing) no longer raises out of the
    pool, which lost the finished runs' results: it comes back with its error."""
    from tools.bench_accuracy import run_one

    job = dict(dataset="kard", config="kard_xsub", ann=str(tmp_path / "none.store"),
               train="xsub_train", test="xsub_test", seed=0,
               run_dir=str(tmp_path / "runs" / "x_kard_xsub_test_s0"), overrides=[])  # fmt: skip
    result = run_one(job)
    assert "none.store" in result["error"] and "metrics" not in result
    assert "x_kard_xsub_test_s0: FAILED" in capsys.readouterr().out


def test_a_finished_run_is_reused_only_for_the_same_overrides(tmp_path, capsys):
    """A second sweep with other overrides and the same --tag found the first sweep's runs
    and reported them as its own: `--against` compared the old runs with themselves (+0.00)."""
    from tools.bench_accuracy import run_one

    run_dir = tmp_path / "runs" / "default_kard_xsub_test_s0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"top1": 0.5}))
    (run_dir / "wall_s.txt").write_text("60.0\n")
    job = dict(dataset="kard", config="kard_xsub", ann="kard.store", train="xsub_train",
               test="xsub_test", seed=0, run_dir=str(run_dir), overrides=[])  # fmt: skip
    assert run_one(job)["metrics"]["top1"] == 0.5  # a run of no overrides (made before the file)
    other = run_one({**job, "overrides": ["trainer.epochs=3"]})
    assert "metrics" not in other and other["error"] == (
        f"{run_dir} holds a run made with overrides [], not ['trainer.epochs=3']; give another "
        "--tag or --runs"
    )
    (run_dir / "bench_overrides.json").write_text('["trainer.epochs=3"]\n')
    assert run_one({**job, "overrides": ["trainer.epochs=3"]})["metrics"]["top1"] == 0.5
