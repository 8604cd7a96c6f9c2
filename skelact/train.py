"""`skelact train`: compose the hydra config, train, evaluate, write the run directory.

Run directly or under torchrun for DistributedDataParallel:
    python -m skelact.train data=ntu60_xsub data.ann_file=ntu60.store
    torchrun --nproc_per_node=2 -m skelact.train hydra.run.dir=runs/ddp ...
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from skelact.config import CONFIG_DIR, absolute_data_paths, check_settings
from skelact.data.datasets import check_caches
from skelact.data.run import Data, make_loader
from skelact.distill import build_teacher
from skelact.epochs import Run, averaged, prepare_run, replace_earlier_run, train_epochs
from skelact.evaluate import evaluate_model, weights_note
from skelact.files import atomic_write
from skelact.fusion import (
    DEV_TRAIN,
    DEV_VAL,
    carve_folds,
    fit_group_weights,
    groups_of,
    read_stream_scores,
    wants_fit,
)
from skelact.lineage import check_lineage
from skelact.models.recognizer import build_recognizer
from skelact.runtime import (
    RunDirLock,
    init_distributed,
    run_environment,
    seed_everything,
    set_threads,
    wait_for_rank0,
)

log = logging.getLogger("skelact")


def train(cfg: DictConfig, run_dir: str | Path, data: Data | None = None) -> dict | None:
    """Train as configured, write the run directory; returns final metrics (rank 0).

    data: the run's data when the caller made it (with carved splits, `skelact.fusion`)."""
    run_dir = Path(run_dir)
    _require_set(cfg)
    with RunDirLock(run_dir) as lock:
        return _train(cfg, run_dir, data, lock)


def _train(cfg: DictConfig, run_dir: Path, data: Data | None, lock: RunDirLock) -> dict | None:
    tcfg = cfg.trainer
    rank, world, device = init_distributed(tcfg.device, tcfg.dist_timeout_min)
    set_threads(tcfg, world)
    # several modalities as an ensemble: their weights from a development run, done first
    check_caches(cfg)  # before a fusion fit trains for minutes on them
    if rank == 0:
        replace_earlier_run(Path(run_dir), tcfg)  # before a fusion fit, which reuses its own
    data = data or Data(cfg)
    data.check_splits(cfg.data, str(cfg.data.ann_file))
    # the models it starts from or learns from: refused where they trained on test samples
    seen = check_lineage(cfg, data)
    fusion = fit_on_dev(cfg, run_dir) if wants_fit(cfg) and world == 1 else None
    groups = groups_of(cfg.modality.streams)
    if fusion is None and cfg.model.fusion == "ensemble" and len(groups) > 1:
        fusion = {"weights": {g: 1 / len(groups) for g in groups}, "chosen": "equal"}
    seed_everything(cfg.seed)
    train_set, specs = data.dataset(cfg.data, cfg.data.train_split, train=True)
    model = build_recognizer(cfg.model, data.streams, data.num_classes, specs).to(device)
    if fusion is not None:
        model.set_group_weights(fusion["weights"])
    _check_options(cfg, data.views)  # (views checked by the dataset)
    teacher, distilled = None, None
    if tcfg.get("distill") and tcfg.distill.teacher:
        split = cfg.data.train_split
        teacher, distilled = build_teacher(cfg, data, split, train_set, specs, device)
    train_loader = make_loader(train_set, tcfg, True, rank, world, cfg.seed)
    stretched = _stretch_epochs(cfg, len(train_loader))
    info = run_info(cfg, data, specs)  # after min_steps: the checkpoint records the epochs run
    run, started = prepare_run(cfg, model, data, run_dir, len(train_loader), info, rank)
    run.net = model
    if world > 1:
        run.net = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=len(data.streams) > 1
        )
    if rank == 0:
        env = _open_run(cfg, data, run_dir, device, world, len(train_set), stretched, started)
        lock.acquire()  # a new run's directory exists from here
    train_epochs(run, cfg, data, train_loader, teacher, run_dir, rank, world, device)
    del train_loader  # ends its persistent workers before the final evaluation
    if world > 1:
        wait_for_rank0("closes the training", tcfg.dist_timeout_min)
    if rank != 0:
        return None
    metrics = _final_evaluation(run, cfg, data, run_dir, device, seen)
    return add_run_notes(metrics, run_dir, cfg, fusion, distilled, env, started)


def _require_set(cfg: DictConfig) -> None:
    """Refuse a config with mandatory values (???) unset, naming them, and mistyped numbers."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SystemExit(
            f"skelact train: set {' '.join(k + '=...' for k in missing)} "
            "(e.g. data=ntu60_xsub data.ann_file=ntu60.store); see skelact train --help"
        )
    check_settings(cfg)


def _check_options(cfg: DictConfig, views: int) -> None:
    """Warn about options that do nothing here (trainer.consistency without views,
    trainer.mutual without an ensemble, model.modality_dropout with one modality); refuse what
    distillation does not combine with (the teacher scores each sample once, unmixed)."""
    tcfg = cfg.trainer
    if tcfg.get("consistency", 0.0) and views < 2:
        log.warning("trainer.consistency needs trainer.views > 1: it has no effect")
    if tcfg.get("mutual", 0.0) and cfg.model.get("fusion") != "ensemble":
        log.warning(
            "trainer.mutual=%s has no effect with model.fusion=%s: the streams learn from "
            "their ensemble's probabilities (model.fusion=ensemble)",
            tcfg.mutual, cfg.model.get("fusion"),
        )  # fmt: skip
    if cfg.model.get("modality_dropout", 0.0) and len(groups_of(cfg.modality.streams)) < 2:
        log.warning(
            "model.modality_dropout=%s has no effect: it drops whole modalities, and %s are "
            "one (the skeleton streams count as one)",
            cfg.model.modality_dropout, "+".join(cfg.modality.streams),
        )  # fmt: skip
    if not (tcfg.get("distill") and tcfg.distill.teacher):
        return
    if views > 1:
        raise SystemExit(
            "trainer.distill.teacher and trainer.views > 1 do not combine: the teacher "
            "scores one view of each sample; set trainer.views=1"
        )
    if cfg.model.get("replica_augment"):  # (the model refuses it without replicas)
        raise SystemExit(
            "trainer.distill.teacher and model.replica_augment=true do not combine: the "
            "teacher scores one view of each sample; set model.replica_augment=false"
        )
    if tcfg.get("mixup", 0.0):
        raise SystemExit(
            "trainer.distill.teacher and trainer.mixup do not combine: the teacher scores "
            "each sample unmixed; set trainer.mixup=0"
        )


def _stretch_epochs(cfg: DictConfig, steps_per_epoch: int) -> tuple | None:
    """trainer.min_steps: more epochs where trainer.epochs would take fewer steps. Sets
    cfg.trainer.epochs (the schedule and the loop read it); returns what to log (None: as
    configured)."""
    tcfg = cfg.trainer
    min_steps = int(tcfg.get("min_steps", 0))
    if not min_steps or steps_per_epoch * tcfg.epochs >= min_steps:
        return None
    epochs = math.ceil(min_steps / steps_per_epoch)
    stretched = (min_steps, epochs, steps_per_epoch, tcfg.epochs)
    cfg.trainer.epochs = epochs
    return stretched


def _open_run(cfg, data: Data, run_dir: Path, device, world, samples, stretched, started) -> dict:
    """Rank 0: the run directory with its config.yaml, and the run's first log lines. Returns
    the machine and precision the run trains with (`run_environment`)."""
    tcfg = cfg.trainer
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    env = run_environment(tcfg.get("precision", "fp32"), device)
    log.info(
        "training %s on %s (%s), world size %d, %d train samples -> %s",
        "+".join(data.streams),
        device,
        env["training_dtype"] + ("" if env["training_dtype"] == "float32" else " autocast"),
        world,
        samples,
        run_dir,
    )
    log.info(
        "machine: %s, torch %s, CPU %s (%s; bfloat16 units: %s)",
        env.get("gpu", "no GPU"), env["torch"], env["cpu"], env["cpu_capability"],
        " ".join(env["cpu_bf16_flags"]) or "none",
    )  # fmt: skip
    if stretched:
        log.info("trainer.min_steps=%d: %d epochs of %d steps instead of %d", *stretched)
    if started:
        same = "the same classes" if started["same_classes"] else "other classes: a new classifier"
        log.info(
            "trainer.init_from: %d tensors from %s (%s); fresh: %s", started["loaded"],
            started["checkpoint"], same, ", ".join(started["fresh"]) or "none",
        )  # fmt: skip
    return env


def _final_evaluation(run: Run, cfg, data: Data, run_dir: Path, device, seen=None) -> dict:
    """best.pt made sure of, then the final model (its weight average) evaluated on the test
    split into the run directory (`evaluate_model`); `seen`: `check_lineage`'s findings."""
    ckpt_dir, best = run.ckpt_dir, run.state["best"]
    if best is None:  # no monitored epoch: the final model is the best
        if not (ckpt_dir / "last.pt").is_file():  # epochs=0: the model as it is, the final
            run.save("last.pt")  # weights too (what metrics.json, eval and init_from name)
        with atomic_write(ckpt_dir / "best.pt") as dst, open(ckpt_dir / "last.pt", "rb") as src:
            shutil.copyfileobj(src, dst)
    trained_on = data.names_of(cfg.data.train_split)
    # the final weights (last.pt's), a moving average of them with trainer.ema_epochs
    ema = float(cfg.trainer.get("ema_epochs", 0) or 0) if run.average is not None else 0
    # the checkpoint as the run directory names it: the run's metrics.json stays the same
    # wherever the run directory is (a moved or copied run, two runs compared)
    weights = weights_note("checkpoints/last.pt", run.state, ema)
    with averaged(run.model, run.average) as scored:
        metrics = evaluate_model(
            scored, cfg, data, run_dir, device, trained_on=trained_on, weights=weights, lineage=seen
        )
    return metrics


def add_run_notes(
    metrics: dict,
    run_dir: Path,
    cfg: DictConfig,
    fusion: dict | None,
    distilled: dict | None = None,
    environment: dict | None = None,
    started: dict | None = None,
) -> dict:
    """Add to metrics.json how the image streams' features were made (random weights say so),
    the fitted modality weights with their development scores, the distillation teacher, the
    machine and precision the run trained with (`run_environment`), and the checkpoint it
    started from (trainer.init_from: `init_weights`' report)."""
    from skelact.data.media.features import feature_provenance

    images = {"rgb", "depth"} & set(cfg.modality.streams)
    notes = {"features": feature_provenance(cfg)} if images else {}
    if environment is not None:
        notes["environment"] = environment
    if fusion is not None:
        notes["fusion"] = fusion
    if started is not None:
        notes["init_from"] = started
    if distilled is not None:
        notes["distill"] = {**distilled, **OmegaConf.to_container(cfg.trainer.distill)}
    if notes:
        metrics = {**metrics, **notes}
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def fit_on_dev(cfg, run_dir: str | Path) -> dict:
    """Fit the modality weights of `cfg`'s model: train it on the training split less a carved
    development split, score that split per stream, `fit_group_weights`. The development run
    lands in run_dir/fusion_fit (reused when its scores are there: a resumed run). With
    model.fusion_folds=K > 1 there are K such runs (run_dir/fusion_fit/fold<k>), each holding
    out one fold, and the weights are fit on all their scores together. Returns the report,
    with "weights"."""
    folds = int(cfg.model.get("fusion_folds", 1))
    fit_dir = Path(run_dir) / "fusion_fit"
    sub_dirs = [fit_dir] if folds <= 1 else [fit_dir / f"fold{k}" for k in range(folds)]
    data, carved = None, None
    parts = []
    for k, sub_dir in enumerate(sub_dirs):
        if not (sub_dir / "stream_scores.npz").is_file():
            if data is None:
                data, train_idx, carved = _carve_dev(cfg, folds, len(sub_dirs))
            dev = carved[k]
            data.carved = {DEV_TRAIN: np.delete(train_idx, dev), DEV_VAL: train_idx[dev]}
            sub = OmegaConf.merge(cfg, {
                "data": {"train_split": DEV_TRAIN, "test_split": DEV_VAL, "val_split": None},
                "model": {"fusion_weights": "equal"},
            })  # fmt: skip
            fold = f" (fold {k + 1} of {folds})" if folds > 1 else ""
            log.info(
                "fusion_weights=fit%s: training on %d samples, scoring %d carved from %s -> %s",
                fold, len(train_idx) - len(dev), len(dev), cfg.data.train_split, sub_dir,
            )  # fmt: skip
            train(sub, sub_dir, data=data)
        parts.append(read_stream_scores(sub_dir))
    scores = {s: np.concatenate([p[0][s] for p in parts]) for s in parts[0][0]}
    labels = np.concatenate([p[1] for p in parts])
    groups = groups_of(cfg.modality.streams)
    min_gain = cfg.model.get("fusion_min_gain", 2)
    weights, report = fit_group_weights(scores, labels, groups, min_gain)
    over = f" over {len(sub_dirs)} folds, {len(labels)} samples" if folds > 1 else ""
    alone = ", ".join(f"{k} {v:.4f}" for k, v in report["dev_top1_per_modality"].items())
    log.info("fusion weights %s, fit on the development run's scores: top-1 %.4f with them%s "
             "(each modality alone: %s)", weights, report["dev_top1"], over, alone)  # fmt: skip
    return {**report, "chosen": "fit", "folds": len(sub_dirs), "fit_run": str(fit_dir)}


def _carve_dev(cfg, folds: int, parts: int) -> tuple[Data, np.ndarray, list[np.ndarray]]:
    """`cfg`'s data, its training split's indices and the `parts` development splits carved
    from it (`carve_folds`: positions in those indices); refuses a split that cannot be
    carved so (one of them empty, or the whole split)."""
    from skelact.data.datasets import split_samples

    data = Data(cfg)
    data.check_splits(cfg.data, str(cfg.data.ann_file))
    train_idx = data.store.split(cfg.data.train_split)
    samples = split_samples(data.store, cfg.data.train_split)
    carved = carve_folds(samples, folds, cfg.seed)
    if len(carved) != parts or any(len(d) in (0, len(train_idx)) for d in carved):
        subjects = {s.get("subject") for s in samples} - {None}
        who = f"{len(subjects)} subjects" if subjects else "no subject recorded"
        raise SystemExit(
            f"model.fusion_weights=fit: cannot carve {folds} development split(s) from "
            f"{cfg.data.train_split} ({len(train_idx)} samples, {who}); "
            "model.fusion_weights=equal fuses without a fit"
        )
    return data, train_idx, carved


def run_info(cfg: DictConfig, data: Data, specs: dict) -> dict:
    """What a checkpoint needs besides weights to rebuild the model and read its outputs."""
    return {
        "config": absolute_data_paths(OmegaConf.to_container(cfg, resolve=True)),
        "classes": data.classes,
        "num_classes": data.num_classes,
        "layout": data.layout,
        # input specs without their availability checks (functions)
        "specs": {k: {n: v for n, v in s.items() if n != "has"} for k, s in specs.items()},
    }


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    train(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
