"""Late fusion of separately trained runs: average their test scores and print the accuracy.

Each run folder holds `scores.npy` (N, classes) and `predictions.csv` (frame_dir, label) from
`skelact train` / `skelact eval` on the same split; rows are matched by frame_dir.

    python tools/average_scores.py runs/joint runs/bone runs/jmotion runs/bmotion
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from skelact.metrics import topk_accuracy


def load(run: Path) -> tuple[pd.DataFrame, np.ndarray]:
    preds, scores = run / "predictions.csv", run / "scores.npy"
    for path in (preds, scores):
        if not path.is_file():
            raise SystemExit(f"{path}: missing (a run folder of skelact train or eval)")
    table = pd.read_csv(preds)
    return table, np.load(scores)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="run directories evaluated on the same samples (their scores.npy)",
    )
    from skelact.cli import show_defaults

    show_defaults(p)
    args = p.parse_args()
    first, total = load(args.runs[0])
    order = {name: i for i, name in enumerate(first["frame_dir"])}
    labels = first["label"].to_numpy()
    print(f"{args.runs[0]}: top-1 {100 * topk_accuracy(total, labels, 1):.1f}")
    for run in args.runs[1:]:
        table, scores = load(run)
        if set(table["frame_dir"]) != set(order):
            raise SystemExit(f"{run}: evaluated on other samples than {args.runs[0]}")
        rows = np.empty(len(order), int)
        rows[[order[n] for n in table["frame_dir"]]] = np.arange(len(table))
        scores = scores[rows]
        print(f"{run}: top-1 {100 * topk_accuracy(scores, labels, 1):.1f}")
        total = total + scores
    fused = topk_accuracy(total, labels, 1)  # the ranking rule of metrics.json
    print(
        f"averaged scores of {len(args.runs)} runs: top-1 {100 * fused:.1f} ({len(labels)} samples)"
    )


if __name__ == "__main__":
    main()
