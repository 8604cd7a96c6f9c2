"""tools/bench_accuracy.py's table: mean ± the sample std over seeds, SBU folds averaged."""

from __future__ import annotations

import numpy as np

from tools.bench_accuracy import mean_std, table


def _run(dataset: str, seed: int, top1: float) -> dict:
    metrics = {"top1": top1, "top5": 0.99, "mean_class_accuracy": top1, "wall_s": 60.0}
    return {"dataset": dataset, "seed": seed, "metrics": metrics}


def test_the_spread_over_seeds_is_the_sample_std():
    # BENCHMARKS' N-UCLA seeds: the population std said 0.6, the sample std is 0.75
    assert mean_std(np.array([91.2, 92.5, 91.2])) == "91.6 ± 0.8"
    assert mean_std(np.array([90.0])) == "90.0 ± n/a"
    results = [_run("nucla", s, v / 100) for s, v in enumerate([91.2, 92.5, 91.2])]
    # SBU: each seed's number is the mean of its folds (here 2 folds per seed)
    results += [_run("sbu", s, v / 100) for s in range(3) for v in (90 + s, 92 + s)]
    rows = table(results, [0, 1, 2]).splitlines()
    assert rows[2].startswith("| nucla | 91.6 ± 0.8 | 91.2 / 92.5 / 91.2 |")
    assert rows[3].startswith("| sbu | 92.0 ± 1.0 | 91.0 / 92.0 / 93.0 |")
