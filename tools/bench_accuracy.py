"""Accuracy of the default recipe on the five shared datasets: every dataset x seed, one table.

Prepares the annotation files from ../shared/data (once, into --data-dir), trains
`skelact train` with the default recipe (plus any overrides) on each protocol and seed, one
torch thread per run and --jobs runs side by side, and prints final-epoch top-1 (mean ± std
over seeds, the sample std), top-5, mean class accuracy and the wall time per run. SBU is 5-fold
cross-validation: each seed's number is the mean over the 5 test folds.

    python tools/bench_accuracy.py                  # test protocols, seeds 0 1 2 (hours on 2 cores)
    python tools/bench_accuracy.py --quick          # one seed (about 15 min with --jobs 2)
    python tools/bench_accuracy.py --split dev --datasets nucla utd -- model.skeleton.encoder=gcn
    python tools/bench_accuracy.py --runs runs/st -- model=bilstm_4s_st     # teachers, then
    python tools/bench_accuracy.py --runs runs/kd --teachers runs/st        # distilled default
    python tools/bench_accuracy.py --json new.json --against old.json -- OVERRIDES  # and a change
    python tools/bench_accuracy.py --report new.json --against old.json     # no training

--split dev trains on the development splits carved from the training data (N-UCLA view 1 ->
view 2, UTD-MHAD subjects 1 3 5 -> 7, SBU folds 1 and 3's dev pairs, KARD subjects 1-3 -> 4-5,
MSR DailyActivity3D subjects 1 3 5 -> 7 9): the splits every choice of the recipe was made on.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# name: (data config, prepare source, data folder, test (train, test) pairs, dev pairs)
DATASETS = {
    "nucla": (
        "nucla_xview", "nucla", "nw_ucla",
        [("xview_train", "xview_val")], [("xview_dev_train", "xview_dev_val")],
    ),
    "utd": (
        "utdmhad_xsub", "utd-mhad", "utd_mhad",
        [("xsub_train", "xsub_val")], [("xsub_dev_train", "xsub_dev_val")],
    ),
    "sbu": (
        "sbu", "sbu", "sbu",
        [(f"fold{k}_train", f"fold{k}_test") for k in range(1, 6)],
        [(f"fold{k}_dev_train", f"fold{k}_dev_val") for k in (1, 3)],
    ),
    "kard": (
        "kard_xsub", "kard", "kard",
        [("xsub_train", "xsub_test")], [("xsub_dev_train", "xsub_dev_val")],
    ),
    "msr": (
        "msrdaily_xsub", "msr-daily", "msr_daily3d",
        [("xsub_train", "xsub_test")], [("xsub_dev_train", "xsub_dev_val")],
    ),
}  # fmt: skip


def prepare(name: str, data_dir: Path) -> Path:
    """The dataset's annotation store, made with `skelact prepare` when absent."""
    _, source, folder, _, _ = DATASETS[name]
    out = data_dir / f"{name}.store"
    if not out.exists():
        if not (SHARED / folder).is_dir():
            raise SystemExit(f"{SHARED / folder}: dataset folder not found")
        cmd = [sys.executable, "-m", "skelact.cli", "prepare", source, str(SHARED / folder)]
        subprocess.run([*cmd, "--out", str(out)], check=True, cwd=ROOT, capture_output=True)
    return out


class Runs:
    """The `skelact train` processes running now: stopped with the benchmark (Ctrl-C or a
    SIGTERM used to leave them training on, orphaned), and none started after that."""

    def __init__(self):
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def run(self, cmd: list[str]) -> tuple[int, str]:
        """(return code, stderr) of `cmd`; -1 when the benchmark is stopping."""
        with self.lock:
            if self.stopping:
                return -1, "stopped"
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            self.procs.add(proc)
        try:
            _, err = proc.communicate()
        finally:
            with self.lock:
                self.procs.discard(proc)
        return proc.returncode, err

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.procs:
                proc.terminate()


RUNS = Runs()


def run_one(job: dict) -> dict:
    """One `skelact train` run; returns its metrics.json plus the wall time in seconds, or
    the job with its "error" (the other runs go on)."""
    run_dir = Path(job["run_dir"])
    metrics_file = run_dir / "metrics.json"
    made_with = run_dir / "bench_overrides.json"  # the overrides a finished run was made with
    if metrics_file.is_file():
        was = json.loads(made_with.read_text()) if made_with.is_file() else []
        if was != list(job["overrides"]):  # another sweep's run: reusing it would compare it
            err = (f"{run_dir} holds a run made with overrides {was}, not {job['overrides']}; "
                   "give another --tag or --runs")  # fmt: skip
            print(f"  {run_dir.name}: {err}", flush=True)
            return {**job, "error": err}
    else:
        cmd = [
            sys.executable, "-m", "skelact.cli", "train", f"data={job['config']}",
            f"data.ann_file={job['ann']}", f"data.train_split={job['train']}",
            f"data.test_split={job['test']}", f"seed={job['seed']}", "trainer.threads=1",
            "trainer.num_workers=0", "trainer.progress=false", f"hydra.run.dir={run_dir}",
            *job["overrides"],
        ]  # fmt: skip
        start = time.perf_counter()
        code, err = RUNS.run(cmd)
        if code:
            if not RUNS.stopping:
                print(f"  {run_dir.name}: FAILED\n{err[-3000:]}", flush=True)
            return {**job, "error": err[-3000:] or f"exit status {code}"}
        (run_dir / "wall_s.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
        made_with.write_text(json.dumps(list(job["overrides"])) + "\n")
    metrics = json.loads(metrics_file.read_text())
    metrics["wall_s"] = float((run_dir / "wall_s.txt").read_text())
    print(f"  {run_dir.name}: top1 {100 * metrics['top1']:.1f}", flush=True)
    return {**job, "metrics": metrics}


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def jobs_for(args, data_dir: Path) -> list[dict]:
    jobs = []
    for name in args.datasets:
        config, _, _, test_pairs, dev_pairs = DATASETS[name]
        ann = prepare(name, data_dir)
        pairs = dev_pairs if args.split == "dev" else test_pairs
        if name == "sbu" and args.sbu_folds:
            kind = "dev_" if args.split == "dev" else ""
            pairs = [
                (f"fold{k}_{kind}train", f"fold{k}_{kind}{'val' if kind else 'test'}")
                for k in args.sbu_folds
            ]
        for seed in args.seeds:
            for train, test in pairs:
                run_dir = Path(args.runs) / f"{args.tag}_{name}_{test}_s{seed}"
                overrides = list(args.overrides)
                if args.teachers:  # the teacher of the same protocol, split and seed
                    teacher = Path(args.teachers) / f"{args.teacher_tag}_{name}_{test}_s{seed}"
                    overrides.append(f"trainer.distill.teacher={teacher.resolve()}")
                jobs.append(
                    dict(
                        dataset=name, config=config, ann=str(ann), train=train, test=test,
                        seed=seed, run_dir=str(run_dir), overrides=overrides,
                    )
                )  # fmt: skip
    return jobs


def mean_std(values: np.ndarray) -> str:
    """ "mean ± std" with the sample std (ddof=1: seeds are a sample of the runs one could
    get; the population std understates the spread of 3 seeds by a fifth); one value: n/a."""
    std = f"{values.std(ddof=1):.1f}" if len(values) > 1 else "n/a"
    return f"{values.mean():.1f} ± {std}"


def seed_means(results: list[dict], name: str, key: str = "top1") -> dict[int, float]:
    """{seed: metric `key` in % over the dataset's runs of that seed (SBU: its folds averaged;
    a metric a run lacks counts as nan)}. A seed that lacks one of the folds the others have
    (a run failed) is left out: a mean over fewer folds would not be the protocol's."""
    folds: dict[int, dict[str, float]] = {}
    for r in results:
        if r["dataset"] == name:
            value = r["metrics"][key]
            folds.setdefault(r["seed"], {})[r.get("test", "")] = np.nan if value is None else value
    every = set().union(*folds.values()) if folds else set()
    return {
        s: float(np.mean(list(v.values()))) * 100
        for s, v in sorted(folds.items())
        if set(v) == every
    }


def table(results: list[dict], seeds: list[int]) -> str:
    """One row per dataset: per-seed top-1 (folds averaged), mean ± std, top-5, mean class."""
    lines = [
        "| dataset | top-1 % mean ± std | per seed | top-5 % | mean class % | wall min/run |",
        "|---|---|---|---|---|---|",
    ]
    for name in DATASETS:
        rows = [r for r in results if r["dataset"] == name]
        if not rows:
            continue

        def per_seed(key: str, name: str = name) -> np.ndarray:
            means = seed_means(results, name, key)
            return np.array([means.get(s, np.nan) for s in seeds])

        top1, top5, mca = per_seed("top1"), per_seed("top5"), per_seed("mean_class_accuracy")
        wall = np.array([r["metrics"]["wall_s"] for r in rows]) / 60
        lines.append(
            f"| {name} | {mean_std(top1)} | "
            f"{' / '.join(f'{v:.1f}' for v in top1)} | {np.nanmean(top5):.1f} | "
            f"{mca.mean():.1f} | {wall.min():.1f}-{wall.max():.1f} |"
        )
    return "\n".join(lines)


def against(results: list[dict], baseline: list[dict]) -> str:
    """Per dataset, the seeds both hold: the baseline's and these runs' top-1 side by side,
    their means and the change (these minus the baseline)."""
    lines = ["| dataset | seeds | baseline | these runs | change |", "|---|---|---|---|---|"]
    for name in DATASETS:
        new, old = seed_means(results, name), seed_means(baseline, name)
        seeds = [s for s in new if s in old]
        if not seeds:
            continue

        def cell(v: dict, seeds: list[int] = seeds) -> str:
            per = " / ".join(f"{v[s]:.2f}" for s in seeds)
            return f"{per} = {np.mean([v[s] for s in seeds]):.2f}" if len(seeds) > 1 else per

        change = np.mean([new[s] - old[s] for s in seeds])
        seed_list = " ".join(map(str, seeds))
        lines.append(f"| {name} | {seed_list} | {cell(old)} | {cell(new)} | {change:+.2f} |")
    return "\n".join(lines)


def report(results: list[dict], seeds: list[int], baseline_json: str | None) -> None:
    """Print the table of these runs, then, given an earlier --json, `against` it."""
    print(table(results, seeds))
    if baseline_json and not Path(baseline_json).is_file():  # a sweep beside this one, not done
        print(f"\n--against {baseline_json}: no such file; later: --report JSON --against it")
    elif baseline_json:
        baseline = json.loads(Path(baseline_json).read_text())
        print(f"\nagainst {baseline_json}\n\n{against(results, baseline)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--split",
        choices=["test", "dev"],
        default="test",
        help="test: the official protocols; dev: splits carved from the training subjects or views",
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        choices=list(DATASETS),
        default=list(DATASETS),
        help="shared sets to train on",
    )
    p.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="a training run per seed"
    )
    p.add_argument("--quick", action="store_true", help="seed 0 only")
    p.add_argument(
        "--sbu-folds", nargs="+", type=int, help="SBU folds (default: dev 1 3, test all)"
    )
    p.add_argument("--jobs", type=int, default=2, help="training runs side by side")
    p.add_argument("--data-dir", default="runs/bench_accuracy/data", help="annotation stores")
    p.add_argument("--runs", default="runs/bench_accuracy", help="run folders (reused if done)")
    p.add_argument("--tag", default="default", help="prefix of the run folders")
    p.add_argument("--json", help="write every run's metrics here")
    p.add_argument(
        "--teachers",
        help="distil (trainer.distill.teacher) from the runs in this folder: for each run, the "
        "one of the same dataset, split and seed, made by this script with --teacher-tag",
    )
    p.add_argument("--teacher-tag", default="default", help="--tag of the teachers' runs")
    p.add_argument(
        "--against",
        help="a --json file of earlier runs: also print their top-1 beside these runs', per "
        "seed both hold, with the change (read when these runs end: it may be a sweep still "
        "running)",
    )
    p.add_argument(
        "--report", help="a --json file: print its tables instead of training (with --against)"
    )
    p.add_argument("overrides", nargs="*", help="skelact train overrides (after --)")
    from skelact.cli import show_defaults

    show_defaults(p)
    args = p.parse_args()
    if args.quick:
        args.seeds = [0]
    missing = [f for f in (args.report, args.against) if f and not Path(f).is_file()]
    if args.report and missing:
        p.error(f"no such file: {', '.join(missing)}")
    if args.report:
        results = json.loads(Path(args.report).read_text())
        report(results, sorted({r["seed"] for r in results}), args.against)
        return
    if missing:  # --against is read only when the runs end
        print(f"warning: --against {args.against} does not exist (yet)", file=sys.stderr)
    # the runs start in the repository root: paths given relative to here must not move there
    data_dir = Path(args.data_dir).resolve()
    args.runs = str(Path(args.runs).resolve())
    data_dir.mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(args, data_dir)
    print(f"{len(jobs)} runs ({args.split} splits), {args.jobs} at a time", flush=True)
    signal.signal(signal.SIGTERM, _terminate)  # as Ctrl-C: the runs stop with the benchmark
    pool = ThreadPoolExecutor(args.jobs)
    try:
        results = list(pool.map(run_one, jobs))
    except BaseException:
        RUNS.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    failed = [r for r in results if "error" in r]
    results = [r for r in results if "error" not in r]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if failed:
        names = ", ".join(Path(r["run_dir"]).name for r in failed)
        print(f"\n{len(failed)} of {len(jobs)} runs failed (not in the tables): {names}")
    overrides = " ".join(args.overrides) or "(default recipe)"
    print(f"\n{args.split} splits, seeds {args.seeds}, {overrides}\n")
    report(results, args.seeds, args.against)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
