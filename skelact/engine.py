"""Plain-torch training and evaluation loops: one epoch, evaluation, the evaluation's outputs."""

from __future__ import annotations

import ctypes
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from skelact.losses import loss_terms, mix_batch, sharpness_step, step_loss
from skelact.metrics import confusion_matrix, predictions, summarize
from skelact.optim import WeightAverage
from skelact.runtime import train_dtype
from skelact.viz import plot_confusion


def split_batch(batch: dict, streams, device) -> tuple[dict, torch.Tensor, int]:
    """Stream tensors (N, K, ...) -> (N*K, ...) on device; labels (N,); clips per sample K.

    Streams may bring different clip counts at test time (5 skeleton clips, 1 cached RGB
    feature clip): a stream with one clip stays (N, ...); the model encodes it once and
    repeats its embedding, so that clip k of every stream is fused with clip k of the others.
    """
    k = max(batch[name].shape[1] for name in streams)
    inputs = {}
    for name in streams:
        x = batch[name]
        if x.shape[1] not in (1, k):
            raise ValueError(f"stream {name!r} has {x.shape[1]} clips per sample, others {k}")
        inputs[name] = x.to(device, non_blocking=True).flatten(0, 1)
    return inputs, batch["label"].to(device), k


def training_inputs(batch: dict, streams, device, views: int) -> tuple[dict, torch.Tensor]:
    """`split_batch` for a training step: with trainer.views > 1 every sample's views are rows
    of their own, adjacent, and its label is repeated for each."""
    inputs, labels, k = split_batch(batch, streams, device)
    if views > 1:
        if k != views:
            raise ValueError(f"{views} training views expected, the batch has {k} clips")
        labels = labels.repeat_interleave(views)
    return inputs, labels


def train_step(model, batch, optimizer, scheduler, streams, tcfg, dtype, teacher, device, average):
    """One optimizer step on `batch` (mixed when trainer.mixup says, its gradient taken again
    at nearby weights when trainer.sam does, clipped at trainer.grad_clip); the weight
    average follows. Returns the outputs, the loss and the labels (one per row)."""
    inputs, labels = training_inputs(batch, streams, device, int(tcfg.get("views", 1)))
    mix, mixup = None, float(tcfg.get("mixup", 0.0))
    if mixup:
        inputs, *mix = mix_batch(inputs, labels, mixup)
    step = (model, inputs, labels, batch, dtype, tcfg, mix, teacher, device)
    out, loss = step_loss(*step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sam = float(tcfg.get("sam", 0.0))
    if sam:  # the gradient again at the worst nearby weights, then back to the weights
        with sharpness_step(model, sam):
            optimizer.zero_grad(set_to_none=True)
            step_loss(*step)[1].backward()
    if tcfg.grad_clip:  # per modality when the model groups them (an ensemble's)
        groups = getattr(model, "grad_groups", lambda: [list(model.parameters())])()
        for params in groups:
            nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
    optimizer.step()
    scheduler.step()
    if average is not None:
        average.update()
    return out, loss, labels


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer,
    scheduler,
    device,
    streams,
    tcfg,
    epoch: int,
    show: bool = True,
    teacher=None,
    average: WeightAverage | None = None,
) -> dict:
    """One pass over `loader` with backpropagation through time; returns the mean loss (of an
    ensemble: the mean over its streams' losses), accuracy, samples seen and seconds.
    teacher: a `skelact.distill.Teacher`, whose predictions for each batch are mixed into the
    loss as trainer.distill says. average: a `WeightAverage`, updated after every step.
    trainer.views: augmented views of each sample in the batch, each trained as a sample of
    its own, pulled together by trainer.consistency."""
    model.train()
    dtype = train_dtype(tcfg.get("precision", "fp32"), device)
    start = time.perf_counter()
    # running totals stay on the device: reading them every step would sync it every step
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    desc = f"epoch {epoch + 1}/{tcfg.epochs}"
    # on a terminal only (disable=None): in a log file the epoch's line says it all
    bar = tqdm(loader, desc=desc, leave=False, disable=None if show else True, dynamic_ncols=True)
    for batch in bar:
        out, loss, labels = train_step(
            model, batch, optimizer, scheduler, streams, tcfg, dtype, teacher, device, average
        )
        n = len(labels)
        # an ensemble trains on the sum of its streams' losses; the log shows their mean
        per = loss_terms(out)
        total_loss += loss.detach().double() * n / per
        correct += (out["logits"].argmax(1) == labels).sum()
        seen += n
        if show:
            bar.set_postfix(
                loss=f"{total_loss.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}"
            )
    return {
        "loss": total_loss.item() / max(seen, 1),
        "acc": correct.item() / max(seen, 1),
        "seen": seen,
        "seconds": time.perf_counter() - start,
    }


@functools.cache
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc's malloc_trim).

    Evaluation's per-batch activations (K test clips per sample) fragment glibc's heap: over
    400 NTU batches the main process grew by 0.9-1.5 GB and never shrank (3.4 GB over an NTU60
    test split under torchrun); trimming every 20 batches kept it flat at no measurable cost.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, streams, show: bool = True) -> dict:
    """Scores averaged over each sample's K clips: fused and per stream."""
    model.eval()
    fused, labels, index = [], [], []
    # a single stream's scores are the fused scores: not computed twice
    per_stream = {s: [] for s in streams} if len(streams) > 1 else {}
    bar = tqdm(loader, desc="evaluate", leave=False, disable=None if show else True,
               dynamic_ncols=True)  # fmt: skip
    for b, batch in enumerate(bar):
        if b % 20 == 19:
            trim_heap()
        inputs, y, k = split_batch(batch, streams, device)
        out = model(inputs)
        n = len(y)
        fused.append(torch.softmax(out["logits"], -1).view(n, k, -1).mean(1).cpu())
        for s in per_stream:
            per_stream[s].append(torch.softmax(out["streams"][s], -1).view(n, k, -1).mean(1).cpu())
        labels.append(y.cpu())
        index.append(batch["index"])
    cat = lambda xs: torch.cat(xs).numpy()  # noqa: E731
    scores = cat(fused)
    return {
        "scores": scores,
        "stream_scores": {s: cat(v) for s, v in per_stream.items()} or {streams[0]: scores},
        "labels": cat(labels),
        "index": cat(index),
    }


def write_eval_outputs(
    result: dict,
    names: Sequence[str],
    classes: list[str],
    split: str,
    out_dir: str | Path,
    extra: dict | None = None,
) -> dict:
    """metrics.json, predictions.csv, scores.npy, confusion_matrix.csv/.png into `out_dir`;
    `names`: the evaluated samples' names, in dataset order; `extra`: more metrics.json keys.
    Every output ranks the classes with one rule (`skelact.metrics.rank_classes`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores, labels = result["scores"], result["labels"]
    preds = predictions(scores)
    cm = confusion_matrix(labels, preds, scores.shape[1])
    metrics = {**summarize(scores, labels, cm), "split": split, **(extra or {})}
    if len(result["stream_scores"]) > 1:
        metrics["streams"] = {s: summarize(v, labels) for s, v in result["stream_scores"].items()}
        # each stream's probabilities (rows as scores.npy): for re-fusing (skelact.fusion)
        np.savez(
            out_dir / "stream_scores.npz",
            __labels__=labels,
            **{s: v.astype(np.float32) for s, v in result["stream_scores"].items()},
        )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    np.save(out_dir / "scores.npy", scores.astype(np.float32))  # (N, classes), rows as the csv
    top_p = scores[np.arange(len(preds)), preds]
    names = [names[i] for i in result["index"]]
    pd.DataFrame(
        {
            "frame_dir": names,
            "label": labels,
            "pred": preds,
            "label_name": [classes[i] for i in labels],
            "pred_name": [classes[i] for i in preds],
            "prob": top_p.round(5),
        }
    ).to_csv(out_dir / "predictions.csv", index=False)
    # only classes that occur (as label or prediction) get a row/column: NTU-wide tables
    # for a 6-class demo would be mostly empty
    shown = np.union1d(labels, preds)
    cm = cm[np.ix_(shown, shown)]
    shown_names = [classes[i] for i in shown]
    pd.DataFrame(cm, index=shown_names, columns=shown_names).to_csv(
        out_dir / "confusion_matrix.csv"
    )
    plot_confusion(
        cm,
        shown_names,
        out_dir / "confusion_matrix.png",
        title=f"{split}: top-1 {metrics['top1']:.3f}",
    )
    return metrics
