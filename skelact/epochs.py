"""A training run's state and its epoch loop: the model with its optimizer, schedule and weight
average (`Run`, made by `prepare_run`, resumed from checkpoints/last.pt), then per epoch one
pass over the training data and, on rank 0, validation, checkpoints, train_log.csv, the
training curves, TensorBoard and the log line."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig

from skelact.checkpoints import init_weights, load_checkpoint, save_checkpoint
from skelact.config import DATA_PATHS, changed_settings
from skelact.data.run import Data, make_loader
from skelact.engine import evaluate, train_one_epoch
from skelact.metrics import topk_accuracy
from skelact.optim import WeightAverage, cosine_with_warmup, make_optimizer
from skelact.runtime import reduce_stats, wait_for_rank0
from skelact.viz import plot_training_curves

log = logging.getLogger("skelact")


@dataclass
class Run:
    """What the epoch loop trains and checkpoints: the model (`net`: the same, wrapped in
    DistributedDataParallel under torchrun), its optimizer, schedule and weight average, the
    progress (`state`: epochs done, history, best validation top-1) and what a checkpoint
    records besides weights (`info`, `run_info`)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    average: WeightAverage | None
    state: dict
    info: dict
    ckpt_dir: Path
    net: torch.nn.Module | None = None

    def save(self, name: str) -> None:
        """checkpoints/`name`. With a weight average its "model" is the average (what
        evaluation and prediction use) and the trained weights ride along for resuming."""
        weights = {"model": self.model.state_dict()}
        if self.average is not None:
            weights = {
                "model": self.average.shadow,
                "trained_model": weights["model"],
                "average_updates": self.average.updates,
            }
        save_checkpoint(
            {
                **weights,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                **self.state,
                **self.info,
            },
            self.ckpt_dir / name,
        )


def prepare_run(cfg, model, data: Data, run_dir: Path, steps_per_epoch: int, info: dict, rank: int):
    """The optimizer, schedule and weight average of `model`; its weights from trainer.init_from,
    or everything from the run's checkpoints/last.pt when resuming (trainer.resume). Returns the
    `Run` and `init_weights`' report (None: not started from another model's weights)."""
    tcfg = cfg.trainer
    optimizer = make_optimizer(model.parameters(), tcfg)
    steps = steps_per_epoch * tcfg.epochs
    warmup, cycles = steps_per_epoch * tcfg.warmup_epochs, 1 + int(tcfg.get("restarts", 0))
    # at most half the run: a short run would otherwise end at the peak learning rate
    warmup = min(warmup, steps // 2)
    scheduler = cosine_with_warmup(optimizer, steps, warmup, tcfg.min_lr_ratio, cycles)
    ckpt_dir = run_dir / "checkpoints"
    resuming = tcfg.resume and (ckpt_dir / "last.pt").is_file()
    started = None  # trainer.init_from: where the weights came from (a resumed run has its own)
    if tcfg.get("init_from") and not resuming:
        started = init_weights(model, tcfg.init_from, data.layout, data.classes)
    ema = float(tcfg.get("ema_epochs", 0) or 0)
    average = WeightAverage(model, ema, steps_per_epoch) if ema > 0 else None
    state = {"epoch": 0, "history": [], "best": None}
    run = Run(model, optimizer, scheduler, average, state, info, ckpt_dir)
    if resuming:
        _resume(run, rank, cfg)
    return run, started


# What a run writes (and the fusion fit's development runs): removed when a new run replaces
# an earlier one in its folder, so that none of them is the old run's.
RUN_OUTPUTS = (
    "checkpoints", "train_log.csv", "training_curves.png", "metrics.json", "predictions.csv",
    "scores.npy", "stream_scores.npz", "confusion_matrix.csv", "confusion_matrix.png",
    "fusion_fit", "tensorboard",
)  # fmt: skip


def replace_earlier_run(run_dir: Path, tcfg) -> None:
    """A new run (not trainer.resume) in a folder that holds an earlier one: say so, and
    remove the earlier run's outputs (`RUN_OUTPUTS`), which a shorter or other run would
    otherwise leave beside its own (a train_log.csv of 30 epochs beside a run of 1; an earlier
    fusion fit taken as this run's; with trainer.epochs=0 the earlier last.pt, copied to
    best.pt as this run's)."""
    import shutil

    if tcfg.resume or not (run_dir / "checkpoints" / "last.pt").is_file():
        return
    log.warning(
        "%s holds an earlier run: its checkpoints and outputs are removed "
        "(trainer.resume=true continues it instead)",
        run_dir,
    )
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


# What a resumed run may change: how it runs, not what it trains (trainer.epochs: warned below;
# the data files: a moved dataset; init_from: ignored when resuming).
RESUME_FREE = {
    "trainer.resume", "trainer.epochs", "trainer.num_workers", "trainer.threads",
    "trainer.device", "trainer.progress", "trainer.tensorboard", "trainer.eval_every",
    "trainer.dist_timeout_min", "trainer.worker_nice", "trainer.init_from", "run_name",
    *(f"data.{key}" for key in DATA_PATHS),
}  # fmt: skip


def _resume(run: Run, rank: int, cfg) -> None:
    """Weights, weight average, optimizer, schedule and progress from checkpoints/last.pt.
    Refuses, in one line, a checkpoint of another model than this run's, one past
    trainer.epochs, and settings that differ from those the run was trained with (the
    optimizer's state would bring back the old learning rate, and the rest would mix two
    settings in one run)."""
    epochs = cfg.trainer.epochs
    path = run.ckpt_dir / "last.pt"
    ck = load_checkpoint(path)
    fix = (
        "resume with the run's own settings (its config.yaml), or train into another hydra.run.dir"
    )
    changed = changed_settings(ck.get("config") or {}, cfg, RESUME_FREE)
    if changed:
        shown = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if changed[5:] else "")
        raise SystemExit(f"{path} was trained with other settings ({shown}): {fix}")
    if ck["epoch"] > epochs:
        raise SystemExit(f"{path} is at epoch {ck['epoch']}, past trainer.epochs={epochs}: {fix}")
    try:
        run.model.load_state_dict(ck.get("trained_model", ck["model"]))
    except RuntimeError as err:  # torch lists every tensor: the first says enough
        first = next((x.strip() for x in str(err).splitlines()[1:] if x.strip()), str(err))
        raise SystemExit(
            f"{path} holds another model than this run's config builds ({first[:240]}): {fix}"
        ) from None
    if run.average is not None and "average_updates" in ck:
        run.average.resume(ck["model"], ck["average_updates"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    run.state = {k: ck[k] for k in run.state}
    if rank == 0:
        log.info("resumed from %s after epoch %d", run.ckpt_dir / "last.pt", run.state["epoch"])
        planned = ck.get("config", {}).get("trainer", {}).get("epochs", epochs)
        if planned != epochs:
            log.warning(
                "%s was trained for trainer.epochs=%s, this run asks %s: the learning-rate "
                "schedule is that of %s epochs from here, so the rate jumps where it resumes",
                path, planned, epochs, epochs,
            )  # fmt: skip


def train_epochs(run: Run, cfg, data: Data, loader, teacher, run_dir: Path, rank, world, device):
    """The epochs from where `run` stands to trainer.epochs; after each, rank 0 validates,
    saves and logs (`_end_epoch`) while the other ranks wait."""
    tcfg = cfg.trainer
    monitor = _monitor(cfg, data, device) if rank == 0 else None
    board = _tensorboard(run_dir) if rank == 0 and tcfg.get("tensorboard") else None
    state_start = run.state["epoch"]
    for epoch in range(state_start, tcfg.epochs):
        loader.sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch * 101 + rank)  # dropout: same after resume
        if tcfg.num_workers > 0 and epoch > state_start:
            # a new DataLoader iterator draws its workers' base seed from this generator; a
            # persistent one is reused and does not: draw it here so dropout stays as before
            torch.empty((), dtype=torch.int64).random_()
        stats = train_one_epoch(
            run.net,
            loader,
            run.optimizer,
            run.scheduler,
            device,
            data.streams,
            tcfg,
            epoch,
            show=tcfg.progress and rank == 0,
            teacher=teacher,
            average=run.average,
        )
        stats = reduce_stats(stats, world, device)
        _check_finite(stats["loss"], epoch, run.optimizer)
        run.state["epoch"] = epoch + 1
        if rank == 0:
            _end_epoch(run, stats, tcfg, monitor, board, run_dir)
        if world > 1:  # the other ranks wait, bounded, while rank 0 validates and saves
            wait_for_rank0(f"validates and saves epoch {epoch + 1}", tcfg.dist_timeout_min)
    if board is not None:
        board.close()


def _end_epoch(run: Run, stats: dict, tcfg, monitor, board, run_dir: Path) -> None:
    """Rank 0 after an epoch: validation top-1 when due (best.pt when it is the best yet),
    last.pt, train_log.csv, the training curves, TensorBoard's scalars and the log line."""
    state = run.state
    done = state["epoch"]  # epochs done, this one included
    row = {
        "epoch": done,
        "loss": stats["loss"],
        "acc": stats["acc"],
        "lr": run.optimizer.param_groups[0]["lr"],
        "seconds": round(stats["seconds"], 3),
    }
    if monitor is not None and _due(done - 1, tcfg):
        with averaged(run.model, run.average) as scored:
            row["val_top1"] = monitor(scored)
        if state["best"] is None or row["val_top1"] > state["best"]:
            state["best"] = row["val_top1"]
            run.save("best.pt")
    state["history"].append(row)
    run.save("last.pt")
    pd.DataFrame(state["history"]).to_csv(run_dir / "train_log.csv", index=False)
    plot_training_curves(state["history"], run_dir / "training_curves.png")
    if board is not None:
        _add_scalars(board, row)
    log.info(
        "epoch %d/%d loss %.4f acc %.4f lr %.2e %.1fs%s",
        done,
        tcfg.epochs,
        row["loss"],
        row["acc"],
        row["lr"],
        row["seconds"],
        f" val_top1 {row['val_top1']:.4f}" if "val_top1" in row else "",
    )


def _add_scalars(board, row: dict) -> None:
    """An epoch's row of train_log.csv to TensorBoard: train/loss, train/acc, train/lr and
    val/val_top1 where validated, at step = the epochs done."""
    for key in ("loss", "acc", "lr", "val_top1"):
        if key in row:
            board.add_scalar(f"{'val' if key == 'val_top1' else 'train'}/{key}",
                             row[key], row["epoch"])  # fmt: skip
    board.flush()


def _check_finite(loss: float, epoch: int, optimizer) -> None:
    """Stop a diverged run before it saves or evaluates anything of that epoch."""
    if not math.isfinite(loss):
        lr = optimizer.param_groups[0]["lr"]
        raise SystemExit(
            f"skelact train: the training loss is {loss} in epoch {epoch + 1}: the run diverged "
            f"(lr {lr:.2e}); nothing of this epoch was saved and no metrics were written. Lower "
            "trainer.lr, or check the data for non-finite values."
        )


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


def averaged(model, average: WeightAverage | None):
    """The model to evaluate: with trainer.ema_epochs its weight average, else as trained."""
    return average.applied() if average is not None else contextlib.nullcontext(model)
