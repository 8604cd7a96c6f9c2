"""`skelact demo`: the whole pipeline on a synthetic dataset in the real NTU file format.

`--modality skeleton_5s` (default) trains the default recipe (five skeleton streams, model
bilstm_4s) on both NTU60 protocols; `skeleton_4s`, `skeleton_2s` and `skeleton` (one stream)
train theirs, with the model `--modality` pairs them with (`skelact.config.modality_overrides`).
Any modality with rgb or depth (`rgb+skeleton`, `rgb+skeleton+depth`, ...) runs the fusion
proof instead (rgb needed): a rendered 4-class set (`skelact.data.synthetic.write_fusion_set`)
where one class pair only RGB can tell apart and the other only the skeleton (or depth), so
each stream alone tops out near 75% and their fusion near 100%. It trains every stream alone and the
fusion on the same cross-subject split and prints their top-1 side by side.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("skelact")

BENCHMARKS = ("ntu60_xsub", "ntu60_xview")


def run_demo(
    out: str | Path = "skelact_demo",
    epochs: int = 30,
    modality: str = "skeleton_5s",
    workers: int = 2,
    seed: int = 0,
    benchmarks: tuple[str, ...] = BENCHMARKS,
) -> dict[str, dict]:
    """Generate data, prepare it, train and evaluate `benchmarks` (both NTU60 protocols);
    returns {benchmark: metrics}.

    modality with rgb or depth: the fusion proof (see the module docstring); returns
    {"skeleton": metrics, "rgb": metrics, ..., "rgb+skeleton": metrics}.
    """
    from skelact.config import compose_config, modality_config, modality_overrides
    from skelact.data.sources.ntu_prepare import prepare_ntu
    from skelact.data.synthetic import write_synthetic_ntu
    from skelact.terminal import run_log
    from skelact.train import train

    if epochs < 0 or workers < 1:  # before any file is written
        raise ValueError(f"demo: --epochs must be >= 0 and --workers >= 1, got {epochs} and "
                         f"{workers}")  # fmt: skip
    out = Path(out)
    if not all(s.startswith("skeleton") for s in modality_config(modality)["streams"]):
        return run_fusion_demo(out, epochs=epochs, modality=modality, workers=workers, seed=seed)
    recipe = modality_overrides(modality)
    start = time.perf_counter()
    log.info("1/3 writing synthetic NTU .skeleton files to %s", out / "skeletons")
    files = write_synthetic_ntu(out / "skeletons", seed=seed)
    log.info("    %d files", len(files))
    log.info("2/3 skelact prepare ntu -> %s", out / "demo_ntu60.store")
    prepare_ntu(out / "skeletons", out / "demo_ntu60.store", dataset="ntu60", workers=workers)
    results = {}
    for i, bench in enumerate(benchmarks):
        log.info("3/3 (%d/%d) training %s on %s", i + 1, len(benchmarks), " ".join(recipe), bench)
        cfg = compose_config(
            [
                *recipe,
                f"data={bench}",
                f"data.ann_file={out / 'demo_ntu60.store'}",
                f"trainer.epochs={epochs}",
                f"seed={seed}",
            ]
        )
        with run_log(out / "runs" / bench):  # train.log, as `skelact train` writes
            results[bench] = train(cfg, out / "runs" / bench)
    _print_table(results, out, time.perf_counter() - start)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_table(results: dict[str, dict], out: Path, seconds: float) -> None:
    lines = ["", f"{'benchmark':<14}{'top-1':>8}{'top-5':>8}{'mean-class':>12}{'samples':>9}"]
    for bench, m in results.items():
        lines.append(
            f"{bench:<14}{m['top1']:>8.3f}{_fmt(m['top5']):>8}"
            f"{m['mean_class_accuracy']:>12.3f}{m['num_samples']:>9d}"
        )
    lines.append(f"\nfinished in {seconds / 60:.1f} min. Plots and predictions:")
    for bench in results:
        lines.append(f"  {out / 'runs' / bench / 'confusion_matrix.png'}")
    print("\n".join(lines))


# ---------------------------------------------------------------------------- fusion proof
FUSION_FEATURES = {"num_frames": 6, "size": 96}  # cached frames per sample, crop size
FUSION_TRAIN = [
    "data=ntu60_xsub",
    "model=bilstm",  # one core per stream, concat fusion: the fusion proof's own recipe
    "model.core.hidden=64",
    "model.attention_hidden=32",
    "model.fusion_hidden=64",
    "model.skeleton.hidden=64",
    "model.skeleton.embed=64",
    "model.rgb.embed=64",
    "model.depth.embed=64",
    "model.rgb.motion=false",  # the fusion proof's recipe predates feature differences
    "model.depth.motion=false",
    "trainer.batch_size=16",
    "trainer.lr=0.003",  # 30 epochs of 8 steps: the default 0.001 left rgb underfit
    "trainer.num_workers=0",
    "trainer.threads=1",  # tiny LSTMs: 2 threads ran them 50x slower on a shared 2-core box
    "trainer.progress=false",
]  # small widths for ~120 training samples on a CPU


def fusion_streams(modality: str) -> list[str]:
    """'rgb+skeleton' -> ["rgb", "skeleton"], in the order of the modality configs."""
    from skelact.config import modality_streams

    return modality_streams(modality)


def prepare_fusion_data(
    out: str | Path,
    streams: list[str],
    seed: int = 0,
    workers: int = 2,
    num_frames: int = FUSION_FEATURES["num_frames"],
    size: int = FUSION_FEATURES["size"],
    **set_kwargs,
) -> list[str]:
    """Render the fusion set under `out`, prepare it, cache rgb/depth features of a random
    frozen ResNet-18; returns the hydra overrides that point a run at them.

    set_kwargs go to write_fusion_set (subjects, cameras, replications, size ...).
    """
    from skelact.data.formats.annotations import load_annotations, save_annotations
    from skelact.data.sources.ntu_prepare import prepare_ntu
    from skelact.data.synthetic import FUSION_CLASSES, write_fusion_set

    out = Path(out)
    dirs = write_fusion_set(out, seed=seed, depth="depth" in streams, workers=workers, **set_kwargs)
    ann_file = out / "fusion.store"
    prepare_ntu(
        dirs["skeletons"], ann_file, "ntu60", workers, rgb=dirs["rgb"], depth=dirs.get("depth")
    )
    data = load_annotations(ann_file)
    data["classes"] = list(FUSION_CLASSES)  # 4 classes, not NTU's 60 names for A001-A004
    save_annotations(data, ann_file)
    overrides = [f"data.ann_file={ann_file}"]
    for kind in [s for s in streams if s != "skeleton"]:
        overrides += _cache_features(data, kind, dirs[kind], out / f"features_{kind}", seed,
                                     num_frames, size)  # fmt: skip
    return overrides


def _cache_features(data, kind, src, out_dir, seed, num_frames, size) -> list[str]:
    """Features of a random frozen ResNet-18 for one stream; the overrides that use them."""
    import torch

    from skelact.data.media.features import extract_features

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one decoding worker + one encoding thread fill 2 cores
    torch.manual_seed(seed)  # the random ResNet: the same weights for the same seed
    try:
        report = extract_features(
            data, kind, src, out_dir, "resnet18", None, num_frames=num_frames, size=size,
            batch_size=8, workers=1, device="cpu",
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    if report["failures"]:
        first = "; ".join(f"{k}: {v}" for k, v in list(report["failures"].items())[:3])
        raise RuntimeError(
            f"{kind} features in {out_dir}: {len(report['failures'])} failed ({first})"
        )
    log.info("    %s features: %d ok, %.1f frames/s", kind, report["ok"], report["frames_per_s"])
    return [
        f"data.{kind}.features={out_dir}",
        f"data.{kind}.num_frames={num_frames}",
        f"model.{kind}.input=features",
        f"model.{kind}.pretrained=null",
    ]


def train_each_and_fused(
    streams: list[str], overrides: list[str], run_root: str | Path, seed: int = 0
) -> dict[str, dict]:
    """Train every stream alone, then all of them fused; {"rgb": metrics, ..., "rgb+skeleton":
    metrics}, same data, split and seed for all."""
    from skelact.config import compose_config, modality_override
    from skelact.terminal import run_log
    from skelact.train import train

    combos = [[s] for s in streams] + ([streams] if len(streams) > 1 else [])
    results = {}
    for combo in combos:
        name = "+".join(combo)
        one = f"modality.streams=[{','.join(fusion_streams(name))}]"  # one skeleton stream
        cfg = compose_config(
            [modality_override(name), one, *FUSION_TRAIN, *overrides, f"seed={seed}"]
        )
        with run_log(Path(run_root) / name.replace("+", "_")):
            results[name] = train(cfg, Path(run_root) / name.replace("+", "_"))
    return results


def run_fusion_demo(
    out: str | Path,
    epochs: int = 30,
    modality: str = "rgb+skeleton",
    workers: int = 2,
    seed: int = 0,
) -> dict[str, dict]:
    """The fusion proof end to end: render, prepare, cache features, train each stream and
    the fusion (ntu60_xsub), print the table, write results.json."""
    out = Path(out)
    streams = fusion_streams(modality)
    if "rgb" not in streams:  # skeleton and depth tell the same pair apart: fused caps at 75%
        raise ValueError(
            f"demo --modality {modality}: the fusion proof needs rgb (one class pair of its "
            "set differs only in colour, the other in motion, which skeleton and depth both "
            "see); try rgb+skeleton, rgb+depth or rgb+skeleton+depth"
        )
    start = time.perf_counter()
    log.info("1/2 rendering the fusion set to %s and caching features", out)
    print(
        "note: rgb/depth features here come from a randomly initialised, frozen ResNet-18 "
        "(pretrained=null), on purpose: the rendered classes need no ImageNet. On real data "
        "the defaults are ImageNet EfficientNet-Lite0 features for RGB (its weights install "
        "with skelact) and a CNN trained on the person's depth crop."
    )
    overrides = prepare_fusion_data(out, streams, seed=seed, workers=workers)
    log.info("2/2 training %s alone and fused", ", ".join(streams))
    overrides.append(f"trainer.epochs={epochs}")
    results = train_each_and_fused(streams, overrides, out / "runs", seed=seed)
    _print_fusion_table(results, out, time.perf_counter() - start)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def _print_fusion_table(results: dict[str, dict], out: Path, seconds: float) -> None:
    from skelact.data.synthetic import FUSION_CLASSES

    n = next(iter(results.values()))["num_samples"]
    legend = ", ".join(f"A{i + 1} {c}" for i, c in enumerate(FUSION_CLASSES))
    lines = ["", f"ntu60_xsub test, {n} samples; classes: {legend}"]
    lines.append(f"{'trained on':<28}{'top-1':>7}" + "".join(f"{f'A{i + 1}':>6}" for i in range(4)))
    for name, m in results.items():
        per = per_class_top1(out / "runs" / name.replace("+", "_"))
        lines.append(f"{name:<28}{m['top1']:>7.3f}" + "".join(f"{a:>6.2f}" for a in per))
        for stream, sm in m.get("streams", {}).items():
            lines.append(f"{'  its ' + stream + ' head alone':<28}{sm['top1']:>7.3f}")
    singles = [m["top1"] for k, m in results.items() if "+" not in k]
    fused = [m["top1"] for k, m in results.items() if "+" in k]
    if fused and singles:
        lines.append(f"fused - best single stream: {fused[0] - max(singles):+.3f}")
    lines.append(f"finished in {seconds / 60:.1f} min; runs, confusion matrices in {out / 'runs'}")
    print("\n".join(lines))


def per_class_top1(run_dir: str | Path, num_classes: int = 4) -> np.ndarray:
    """(num_classes,) top-1 of each true class, from a run's predictions.csv (NaN if absent)."""
    import pandas as pd

    pred = pd.read_csv(Path(run_dir) / "predictions.csv")
    hit = (pred["label"] == pred["pred"]).groupby(pred["label"]).mean()
    return np.array([hit.get(c, np.nan) for c in range(num_classes)])
