"""Plain-torch training and evaluation: one epoch, evaluation, checkpoints, run outputs."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import pickle
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from skelact.files import atomic_write
from skelact.fusion import groups_of
from skelact.metrics import confusion_matrix, predictions, summarize
from skelact.viz import plot_confusion


def pick_device(name: str = "auto") -> torch.device:
    """ "auto" -> cuda when available, else cpu; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """trainer.precision -> the dtype training steps autocast to; None: float32 throughout.

    auto: bfloat16 on a CPU that computes it in hardware (about 1.7x the default's training
    throughput there; BENCHMARKS.md, issue 17), float32 elsewhere, CUDA included. Weights,
    gradients, the optimizer and evaluation stay float32 either way."""
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if device.type == "cpu" and native_bf16() else None
    if precision != "bf16":
        raise SystemExit(f"trainer.precision={precision!r}: choose auto, fp32 or bf16")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SystemExit(f"trainer.precision=bf16: {device} has no bfloat16; use fp32")
    return torch.bfloat16


def training_forward(model: nn.Module, inputs: dict, dtype: torch.dtype | None) -> dict:
    """The model's forward pass of a training step: under autocast to `dtype` (None: float32),
    its logits returned in float32 for the losses."""
    device = next(iter(inputs.values())).device.type
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(inputs)
    return float_outputs(out)


def make_optimizer(params, tcfg) -> torch.optim.Optimizer:
    """trainer.optimizer: adamw (the default) or sgd (momentum 0.9, Nesterov), at trainer.lr
    with trainer.weight_decay."""
    name = tcfg.get("optimizer", "adamw")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=tcfg.lr, momentum=0.9, nesterov=True, weight_decay=tcfg.weight_decay
        )
    raise ValueError(f"trainer.optimizer={name!r}: choose adamw or sgd")


class WeightAverage:
    """An exponential moving average of a model's weights (trainer.ema_epochs).

    After every optimizer step each floating-point parameter and buffer moves towards the
    model's by 1 - decay, with decay = 1 - 1 / (epochs x steps per epoch): about the last
    `epochs` epochs count. Early on the decay is capped at (1 + n) / (10 + n) after n updates,
    so the average is not held at the initial weights. Integer buffers (BatchNorm's counts)
    are copied. `applied()` puts the average into the model for a while (evaluation,
    checkpoints), then gives the trained weights back.
    """

    def __init__(self, model: nn.Module, epochs: float, steps_per_epoch: int):
        if epochs <= 0 or steps_per_epoch <= 0:
            raise ValueError(f"WeightAverage: needs epochs > 0 and steps > 0, got {epochs}, "
                             f"{steps_per_epoch}")  # fmt: skip
        self.model = model
        self.decay = 1.0 - 1.0 / (epochs * steps_per_epoch)
        self.updates = 0
        live = model.state_dict()  # views of the model's tensors (loading copies into them)
        self.shadow = {k: v.detach().clone() for k, v in live.items()}
        self._pairs = [(self.shadow[k], v) for k, v in live.items()]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, value in self._pairs:
            if avg.is_floating_point():
                avg.lerp_(value, 1.0 - decay)
            else:
                avg.copy_(value)

    def resume(self, shadow: dict, updates: int) -> None:
        """Continue from a checkpoint's average (its "model") after `updates` steps."""
        self.updates = int(updates)
        for key, value in shadow.items():
            self.shadow[key].copy_(value)

    @contextlib.contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block, its own after it."""
        trained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.shadow)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(trained)


def cosine_with_warmup(
    optimizer, total_steps: int, warmup_steps: int, min_ratio: float = 0.0, cycles: int = 1
):
    """Per-step LR multiplier: linear warmup, then cosine decay to `min_ratio`; with `cycles`
    > 1 the decay runs that many times in equal parts, each restarting at the peak (warm
    restarts)."""
    span = max(1, total_steps - warmup_steps) / max(1, cycles)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = step - warmup_steps
        progress = 1.0 if done >= span * cycles else (done % span) / span
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


def float_outputs(out: dict) -> dict:
    """The model's logits as float32 (an autocast forward pass leaves them bfloat16), so that
    the losses are computed in full precision; replicas' own outputs too."""
    if out["logits"].dtype == torch.float32 and "members" not in out:
        return out
    streams = {k: v.float() for k, v in out["streams"].items()}
    res = {**out, "logits": out["logits"].float(), "streams": streams}
    if "members" in out:
        res["members"] = [float_outputs(o) for o in out["members"]]
    return res


def stream_loss(out: dict, labels: torch.Tensor, smoothing: float, aux_weight: float):
    """Cross-entropy on the fused logits plus `aux_weight` x each stream's own loss; streams
    fused as an ensemble (out["independent"]) train on their own losses only; replicas
    (out["members"]) each on its own, summed."""
    if "members" in out:
        return sum(stream_loss(o, labels, smoothing, aux_weight) for o in out["members"])
    if out.get("independent"):
        losses = [
            F.cross_entropy(x, labels, label_smoothing=smoothing) for x in out["streams"].values()
        ]
        return torch.stack(losses).sum()
    loss = F.cross_entropy(out["logits"], labels, label_smoothing=smoothing)
    if aux_weight > 0 and len(out["streams"]) > 1:
        for logits in out["streams"].values():
            loss = loss + aux_weight * F.cross_entropy(logits, labels, label_smoothing=smoothing)
    return loss


def view_consistency(out: dict, views: int, weight: float) -> torch.Tensor | float:
    """trainer.consistency: `weight` x the Jensen-Shannon divergence between the predictions
    of each sample's `views` augmented views (rows adjacent), summed over an ensemble's
    streams (over replicas' too), else of the fused logits; 0 with one view."""
    if views < 2 or not weight:
        return 0.0
    if "members" in out:
        return sum(view_consistency(o, views, weight) for o in out["members"])
    outputs = out["streams"].values() if out.get("independent") else [out["logits"]]
    losses = []
    for logits in outputs:
        logp = F.log_softmax(logits.float(), -1).unflatten(0, (-1, views))  # (N, K, C)
        mean = torch.logsumexp(logp, 1, keepdim=True) - math.log(views)  # log of the mean
        # KL(p_k || mean), averaged over the views and the samples
        kl = (logp.exp() * (logp - mean)).sum(-1).mean()
        losses.append(weight * kl)
    return torch.stack(losses).sum()


def mutual_loss(out: dict, weight: float) -> torch.Tensor | float:
    """trainer.mutual: the sum of `mutual_losses` over an ensemble's streams (of each replica);
    0 for other fusions. It does not depend on the labels, so mixup adds it once."""
    if "members" in out:
        return sum(mutual_loss(o, weight) for o in out["members"])
    if not out.get("independent") or len(out["streams"]) < 2:
        return 0.0
    return torch.stack(mutual_losses(out, weight)).sum()


def mutual_losses(out: dict, weight: float) -> list[torch.Tensor]:
    """`weight` x each stream's KL divergence from its modality's averaged probabilities, held
    fixed (with several modalities the skeleton streams learn from the skeleton streams only,
    so a weak image stream pulls none of them)."""
    losses = []
    for names in groups_of(out["streams"]).values():
        probs = torch.stack([out["streams"][k].detach().float().softmax(-1) for k in names])
        target = torch.log(probs.mean(0).clamp_min(1e-12))
        for k in names:
            x = F.log_softmax(out["streams"][k].float(), -1)
            losses.append(weight * F.kl_div(x, target, reduction="batchmean", log_target=True))
    return losses


def mix_batch(inputs: dict, labels: torch.Tensor, alpha: float) -> tuple[dict, torch.Tensor, float]:
    """Mixup: every input blended with another sample's, lam x own + (1 - lam) x partner's,
    lam ~ Beta(alpha, alpha), the partners a random permutation of the batch. A stream of
    N * k rows (k views of each sample, adjacent) keeps its views together. Returns the mixed
    inputs, the partners' labels and lam; the loss is lam x loss(labels) + (1 - lam) x
    loss(partners' labels)."""
    n = len(labels)
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(n, device=labels.device)
    mixed = {}
    for name, x in inputs.items():
        k, rest = divmod(x.shape[0], n)
        if rest:
            raise ValueError(f"mixup: stream {name!r} has {x.shape[0]} rows for {n} labels")
        rows = (perm[:, None] * k + torch.arange(k, device=perm.device)).flatten()
        mixed[name] = x.mul(lam).add_(x[rows], alpha=1.0 - lam)
    return mixed, labels[perm], lam


@contextlib.contextmanager
def sharpness_step(model: nn.Module, rho: float):
    """trainer.sam (sharpness-aware minimisation, Foret et al. 2021): inside the block the
    weights sit at w + rho * g / |g|, g their current gradient, so that a backward pass there
    leaves the gradient of the worst loss within distance rho; on leaving, the weights are w
    again (that gradient stays, for the optimizer). BatchNorm running statistics are not
    updated by the perturbed pass."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    scale = rho / (norm + 1e-12)
    saved = [p.detach().clone() for p in params]
    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in batchnorms]
    with torch.no_grad():
        for p in params:
            p.add_(p.grad * scale)
    for m in batchnorms:
        m.momentum = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved, strict=True):
                p.copy_(w)
        for m, momentum in zip(batchnorms, momenta, strict=True):
            m.momentum = momentum


def loss_terms(out: dict) -> int:
    """How many losses `stream_loss` sums: one per stream of an ensemble, per replica."""
    if "members" in out:
        return sum(loss_terms(o) for o in out["members"])
    return len(out["streams"]) if out.get("independent") else 1


def step_loss(model, inputs, labels, batch, dtype, tcfg, mix, teacher, device):
    """A training step's forward pass and its loss: `stream_loss`, blended with the partners'
    (mix: mixup's (partners' labels, lam), or None), plus trainer.mutual's and
    trainer.consistency's terms and the teacher's part. Returns (outputs, loss)."""
    out = training_forward(model, inputs, dtype)
    loss = stream_loss(out, labels, tcfg.label_smoothing, tcfg.aux_loss_weight)
    if mix is not None:
        partners, lam = mix
        other = stream_loss(out, partners, tcfg.label_smoothing, tcfg.aux_loss_weight)
        loss = lam * loss + (1.0 - lam) * other
    mutual = float(tcfg.get("mutual", 0.0))
    if mutual:
        loss = loss + mutual_loss(out, mutual)
    consistency = float(tcfg.get("consistency", 0.0))
    if consistency:
        loss = loss + view_consistency(out, int(tcfg.get("views", 1)), consistency)
    if teacher is not None:
        loss = teacher.loss(loss, out, batch, inputs, device)
    return out, loss


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
    mixup = float(tcfg.get("mixup", 0.0))
    views = int(tcfg.get("views", 1))
    sam = float(tcfg.get("sam", 0.0))
    start = time.perf_counter()
    # running totals stay on the device: reading them every step would sync it every step
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{tcfg.epochs}",
        leave=False,
        disable=not show,
        dynamic_ncols=True,
    )
    for batch in bar:
        inputs, labels, k = split_batch(batch, streams, device)
        if views > 1:  # every sample's views are rows of their own, adjacent
            if k != views:
                raise ValueError(f"{views} training views expected, the batch has {k} clips")
            labels = labels.repeat_interleave(views)
        mix = None
        if mixup:
            inputs, *mix = mix_batch(inputs, labels, mixup)
        step = (model, inputs, labels, batch, dtype, tcfg, mix, teacher, device)
        out, loss = step_loss(*step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
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
    bar = tqdm(loader, desc="evaluate", leave=False, disable=not show, dynamic_ncols=True)
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


def save_checkpoint(state: dict, path: str | Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a kill or a full disk never leaves a
    half-written checkpoint, nor the temporary file."""
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        # weights_only: tensors, numbers, strings and containers; never code from the file
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message suggests turning weights_only off: the very thing that would run code
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise RuntimeError(
                f"checkpoint {path} names {found.group(1)}, not only tensors and plain data: "
                "loading it could run code from the file, so skelact did not load it"
            ) from err
        detail = [x.strip() for x in str(err).splitlines() if x.startswith("Unsupported")]
        raise RuntimeError(
            f"checkpoint {path} could not be read: not a checkpoint of tensors and plain data"
            + (f" ({detail[0]})" if detail else "")
        ) from err
    except Exception as err:  # noqa: BLE001 - report which file is broken
        raise RuntimeError(f"checkpoint {path} could not be read: {err}") from err


def run_checkpoint(path: str | Path, option: str) -> Path:
    """The checkpoint that a path given to `option` names: a file as it is, a run directory's
    checkpoints/last.pt (its final weights)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise SystemExit(
            f"{option}: {path} does not exist; give a run directory of `skelact train` or one "
            "of its checkpoints"
        )
    return path


def init_weights(
    model: torch.nn.Module, source: str | Path, layout: str, classes: Sequence[str]
) -> dict:
    """Start `model` from a trained model's weights (trainer.init_from): every tensor whose
    name and shape match is copied; the others (a stream the checkpoint lacks, a layer of
    another shape) keep their fresh initialisation, and so do the layers that score the
    classes unless the checkpoint's classes are `classes`, by name and in order, and the
    modality weights of a fused model (the run's own, `Recognizer.run_own`). Refuses a
    checkpoint of another joint layout, and one that shares no tensor with the model. Returns
    a report."""
    path = run_checkpoint(source, "trainer.init_from")
    ck = load_checkpoint(path)
    if ck.get("layout") != layout:
        raise SystemExit(
            f"trainer.init_from: {path} was trained on the {ck.get('layout')} joint layout, "
            f"this run's data is {layout}; the joints must be the same (`skelact repack "
            f"DATA OUT --layout {ck.get('layout')}` where the data has its joints, or start "
            "from a model of this layout)"
        )
    own, theirs = model.state_dict(), ck["model"]
    same_classes = list(ck.get("classes") or []) == list(classes)
    not_taken = set() if same_classes else {
        f"{name}.{key}"
        for name, module in model.named_modules()
        if getattr(module, "scores_classes", False)
        for key, _ in module.named_parameters(recurse=False)
    }  # fmt: skip
    not_taken |= {  # the run's own choices (the modality weights), never the checkpoint's
        f"{name}.{key}" if name else key
        for name, module in model.named_modules()
        for key in getattr(module, "run_own", ())
    }
    taken = {
        k: v
        for k, v in theirs.items()
        if k in own and own[k].shape == v.shape and k not in not_taken
    }
    if not taken:
        raise SystemExit(
            f"trainer.init_from: no tensor of {path} fits this model (another architecture or "
            "other streams); start from a checkpoint of the same model config"
        )
    model.load_state_dict(taken, strict=False)
    fresh = sorted(k for k in own if k not in taken)
    unused = sorted(k for k in theirs if k not in taken)
    return {
        "checkpoint": str(path),
        "loaded": len(taken),
        "same_classes": same_classes,
        "fresh": fresh,
        "unused": unused,
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
