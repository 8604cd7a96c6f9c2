"""`skelact train`: compose the hydra config, train, evaluate, write the run directory.

Run directly or under torchrun for DistributedDataParallel:
    python -m skelact.train data=ntu60_xsub data.ann_file=ntu60.store
    torchrun --nproc_per_node=2 -m skelact.train hydra.run.dir=runs/ddp ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from collections.abc import Collection
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from skelact.checkpoints import init_weights, load_checkpoint, save_checkpoint
from skelact.config import CONFIG_DIR, absolute_data_paths
from skelact.contract import check_specs
from skelact.data.run import Data, make_loader
from skelact.distill import build_teacher
from skelact.engine import evaluate, train_one_epoch, write_eval_outputs
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
from skelact.metrics import topk_accuracy
from skelact.models.recognizer import build_recognizer
from skelact.optim import WeightAverage, cosine_with_warmup, make_optimizer
from skelact.runtime import (
    init_distributed,
    reduce_stats,
    run_environment,
    seed_everything,
    set_threads,
    wait_for_rank0,
)
from skelact.viz import plot_training_curves

log = logging.getLogger("skelact")


def train(cfg: DictConfig, run_dir: str | Path, data: Data | None = None) -> dict | None:
    """Train as configured, write the run directory; returns final metrics (rank 0).

    data: the run's data when the caller made it (with carved splits, `skelact.fusion`)."""
    run_dir = Path(run_dir)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise SystemExit(
            f"skelact train: set {' '.join(k + '=...' for k in missing)} "
            "(e.g. data=ntu60_xsub data.ann_file=ntu60.store); see skelact train --help"
        )
    tcfg = cfg.trainer
    rank, world, device = init_distributed(tcfg.device, tcfg.dist_timeout_min)
    set_threads(tcfg, world)
    # several modalities as an ensemble: their weights from a development run, done first
    fusion = fit_on_dev(cfg, run_dir) if wants_fit(cfg) and world == 1 else None
    seed_everything(cfg.seed)
    data = data or Data(cfg)
    data.check_splits(cfg.data, str(cfg.data.ann_file))
    train_set, specs = data.dataset(cfg.data, cfg.data.train_split, train=True)
    model = build_recognizer(cfg.model, data.streams, data.num_classes, specs).to(device)
    if fusion is not None:
        model.set_group_weights(fusion["weights"])
    teacher, distilled = None, None
    views = data.views  # (checked by the dataset)
    if tcfg.get("consistency", 0.0) and views < 2:
        log.warning("trainer.consistency needs trainer.views > 1: it has no effect")
    if tcfg.get("distill") and tcfg.distill.teacher:
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
        split = cfg.data.train_split
        teacher, distilled = build_teacher(cfg, data, split, train_set, specs, device)
    train_loader = make_loader(train_set, tcfg, True, rank, world, cfg.seed)
    min_steps, stretched = int(tcfg.get("min_steps", 0)), None
    if min_steps and len(train_loader) * tcfg.epochs < min_steps:
        epochs = math.ceil(min_steps / len(train_loader))
        stretched = (min_steps, epochs, len(train_loader), tcfg.epochs)  # logged below
        cfg.trainer.epochs = epochs  # tcfg is this node: the schedule and the loop see it
    info = run_info(cfg, data, specs)  # after min_steps: the checkpoint records the epochs run
    optimizer = make_optimizer(model.parameters(), tcfg)
    steps = len(train_loader) * tcfg.epochs
    warmup, cycles = len(train_loader) * tcfg.warmup_epochs, 1 + int(tcfg.get("restarts", 0))
    scheduler = cosine_with_warmup(optimizer, steps, warmup, tcfg.min_lr_ratio, cycles)
    ckpt_dir = run_dir / "checkpoints"
    resuming = tcfg.resume and (ckpt_dir / "last.pt").is_file()
    started = None  # trainer.init_from: where the weights came from (a resumed run has its own)
    if tcfg.get("init_from") and not resuming:
        started = init_weights(model, tcfg.init_from, data.layout, data.classes)
    ema = float(tcfg.get("ema_epochs", 0) or 0)
    average = WeightAverage(model, ema, len(train_loader)) if ema > 0 else None
    state = {"epoch": 0, "history": [], "best": None}
    if resuming:
        ck = load_checkpoint(ckpt_dir / "last.pt")
        model.load_state_dict(ck.get("trained_model", ck["model"]))
        if average is not None and "average_updates" in ck:
            average.resume(ck["model"], ck["average_updates"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        state = {k: ck[k] for k in state}
        if rank == 0:
            log.info("resumed from %s after epoch %d", ckpt_dir / "last.pt", state["epoch"])
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=len(data.streams) > 1
        )
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml")
        env = run_environment(tcfg.get("precision", "fp32"), device)
        log.info(
            "training %s on %s (%s), world size %d, %d train samples -> %s",
            "+".join(data.streams),
            device,
            env["training_dtype"] + ("" if env["training_dtype"] == "float32" else " autocast"),
            world,
            len(train_set),
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
            log.info(
                "trainer.init_from: %d tensors from %s; fresh: %s", started["loaded"],
                started["checkpoint"], ", ".join(started["fresh"]) or "none",
            )  # fmt: skip
    monitor = _monitor(cfg, data, device) if rank == 0 else None
    board = _tensorboard(run_dir) if rank == 0 and tcfg.get("tensorboard") else None
    state_start = state["epoch"]
    for epoch in range(state_start, tcfg.epochs):
        train_loader.sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch * 101 + rank)  # dropout: same after resume
        if tcfg.num_workers > 0 and epoch > state_start:
            # a new DataLoader iterator draws its workers' base seed from this generator; a
            # persistent one is reused and does not: draw it here so dropout stays as before
            torch.empty((), dtype=torch.int64).random_()
        stats = train_one_epoch(
            net,
            train_loader,
            optimizer,
            scheduler,
            device,
            data.streams,
            tcfg,
            epoch,
            show=tcfg.progress and rank == 0,
            teacher=teacher,
            average=average,
        )
        stats = reduce_stats(stats, world, device)
        _check_finite(stats["loss"], epoch, optimizer)
        row = {
            "epoch": epoch + 1,
            "loss": stats["loss"],
            "acc": stats["acc"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(stats["seconds"], 3),
        }
        state["epoch"] = epoch + 1
        if rank == 0:
            if monitor is not None and _due(epoch, tcfg):
                with _averaged(model, average) as scored:
                    row["val_top1"] = monitor(scored)
                if state["best"] is None or row["val_top1"] > state["best"]:
                    state["best"] = row["val_top1"]
                    _save(ckpt_dir / "best.pt", model, optimizer, scheduler, state, info, average)
            state["history"].append(row)
            _save(ckpt_dir / "last.pt", model, optimizer, scheduler, state, info, average)
            pd.DataFrame(state["history"]).to_csv(run_dir / "train_log.csv", index=False)
            plot_training_curves(state["history"], run_dir / "training_curves.png")
            if board is not None:
                for key in ("loss", "acc", "lr", "val_top1"):
                    if key in row:
                        board.add_scalar(f"{'val' if key == 'val_top1' else 'train'}/{key}",
                                         row[key], epoch + 1)  # fmt: skip
                board.flush()
            log.info(
                "epoch %d/%d loss %.4f acc %.4f lr %.2e %.1fs%s",
                epoch + 1,
                tcfg.epochs,
                row["loss"],
                row["acc"],
                row["lr"],
                row["seconds"],
                f" val_top1 {row['val_top1']:.4f}" if "val_top1" in row else "",
            )
        if world > 1:  # the other ranks wait, bounded, while rank 0 validates and saves
            wait_for_rank0(f"validates and saves epoch {epoch + 1}", tcfg.dist_timeout_min)
    del train_loader, monitor  # ends their persistent workers before the final evaluation
    if board is not None:
        board.close()
    if world > 1:
        wait_for_rank0("closes the training", tcfg.dist_timeout_min)
    if rank != 0:
        return None
    if state["best"] is None and (ckpt_dir / "last.pt").is_file():
        # no monitored epoch: the final model is the best
        with atomic_write(ckpt_dir / "best.pt") as dst, open(ckpt_dir / "last.pt", "rb") as src:
            shutil.copyfileobj(src, dst)
    elif state["best"] is None:  # epochs=0: nothing was trained, save the model as it is
        _save(ckpt_dir / "best.pt", model, optimizer, scheduler, state, info, average)
    trained_on = data.names_of(cfg.data.train_split)
    with _averaged(model, average) as scored:
        metrics = evaluate_model(scored, cfg, data, run_dir, device, trained_on=trained_on)
    return add_run_notes(metrics, run_dir, cfg, fusion, distilled, env, started)


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
    from skelact.data.datasets import split_samples

    folds = int(cfg.model.get("fusion_folds", 1))
    fit_dir = Path(run_dir) / "fusion_fit"
    sub_dirs = [fit_dir] if folds <= 1 else [fit_dir / f"fold{k}" for k in range(folds)]
    data, carved = None, None
    parts = []
    for k, sub_dir in enumerate(sub_dirs):
        if not (sub_dir / "stream_scores.npz").is_file():
            if data is None:
                data = Data(cfg)
                data.check_splits(cfg.data, str(cfg.data.ann_file))
                train_idx = data.store.split(cfg.data.train_split)
                samples = split_samples(data.store, cfg.data.train_split)
                carved = carve_folds(samples, folds, cfg.seed)
                if len(carved) != len(sub_dirs) or any(
                    len(d) in (0, len(train_idx)) for d in carved
                ):
                    raise SystemExit(
                        f"fusion_weights=fit: cannot carve {folds} development split(s) from "
                        f"{cfg.data.train_split} ({len(train_idx)} samples, "
                        f"{len({s.get('subject') for s in samples})} subjects)"
                    )
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
    log.info("fusion weights %s (development top-1 %.4f%s; per modality %s)", weights,
             report["dev_top1"], over, report["dev_top1_per_modality"])  # fmt: skip
    return {**report, "folds": len(sub_dirs), "fit_run": str(fit_dir)}


def _tensorboard(run_dir: Path):
    """A TensorBoard writer into <run dir>/tensorboard (trainer.tensorboard=true)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise SystemExit(
            "trainer.tensorboard=true needs the tensorboard package: "
            "pip install 'skelact[tensorboard]'"
        ) from err
    return SummaryWriter(str(run_dir / "tensorboard"))


def _due(epoch: int, tcfg) -> bool:
    last = epoch + 1 == tcfg.epochs
    return last or (tcfg.eval_every > 0 and (epoch + 1) % tcfg.eval_every == 0)


def _monitor(cfg: DictConfig, data: Data, device: torch.device):
    """Top-1 on data.val_split (carved from training data) for best.pt; None if unset."""
    if not cfg.data.val_split:
        return None
    val_set, _ = data.dataset(cfg.data, cfg.data.val_split, train=False)
    loader = make_loader(val_set, cfg.trainer, False, eval_mode=True)

    def score(model) -> float:
        res = evaluate(model, loader, device, data.streams, show=False)
        return topk_accuracy(res["scores"], res["labels"], 1)

    return score


def _check_finite(loss: float, epoch: int, optimizer) -> None:
    """Stop a diverged run before it saves or evaluates anything of that epoch."""
    if not math.isfinite(loss):
        lr = optimizer.param_groups[0]["lr"]
        raise SystemExit(
            f"skelact train: the training loss is {loss} in epoch {epoch + 1}: the run diverged "
            f"(lr {lr:.2e}); nothing of this epoch was saved and no metrics were written. Lower "
            "trainer.lr, or check the data for non-finite values."
        )


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


def _averaged(model, average: WeightAverage | None):
    """The model to evaluate: with trainer.ema_epochs its weight average, else as trained."""
    return average.applied() if average is not None else contextlib.nullcontext(model)


def _save(path, model, optimizer, scheduler, state: dict, info: dict, average=None) -> None:
    """A checkpoint. With a weight average its "model" is the average (what evaluation and
    prediction use) and the trained weights ride along for resuming."""
    weights = {"model": model.state_dict()}
    if average is not None:
        weights = {
            "model": average.shadow,
            "trained_model": weights["model"],
            "average_updates": average.updates,
        }
    save_checkpoint(
        {
            **weights,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            **state,
            **info,
        },
        path,
    )


def evaluate_model(
    model,
    cfg: DictConfig,
    data: Data,
    out_dir: Path,
    device,
    classes: list[str] | None = None,
    label_map: np.ndarray | None = None,
    contract: dict | None = None,
    trained_on: Collection[str] | None = None,
) -> dict:
    """Evaluate on data.test_split and write metrics, predictions and confusion matrix.

    `classes`, `label_map` (file label -> model label) and `contract` (the input specs the
    model was trained with, checked against the test set's) come from a checkpoint.
    `trained_on`: the names the model was trained on; metrics.json's "train_overlap" counts
    the evaluated samples among them (null: not known).
    """
    test_set, specs = data.dataset(cfg.data, cfg.data.test_split, train=False)
    if contract is not None:
        check_specs(contract, specs)
    loader = make_loader(test_set, cfg.trainer, False, eval_mode=True)
    result = evaluate(model, loader, device, data.streams, show=cfg.trainer.progress)
    if label_map is not None:
        result["labels"] = label_map[result["labels"]]
    names = [test_set.name(i) for i in range(len(test_set))]
    overlap = None if trained_on is None else int(np.isin(names, trained_on).sum())
    if overlap:
        log.warning(
            "%d of the %d evaluated samples of %s are in the model's training split %s",
            overlap, len(names), cfg.data.test_split, cfg.data.train_split,
        )  # fmt: skip
    metrics = write_eval_outputs(
        result, names, classes or data.classes, cfg.data.test_split, out_dir,
        extra={"train_overlap": overlap},
    )  # fmt: skip
    top5 = "n/a" if metrics["top5"] is None else f"{metrics['top5']:.4f}"
    log.info(
        "%s: top1 %.4f top5 %s mean-class %.4f (%d samples) -> %s",
        cfg.data.test_split,
        metrics["top1"],
        top5,
        metrics["mean_class_accuracy"],
        metrics["num_samples"],
        out_dir,
    )
    return metrics


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    train(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
