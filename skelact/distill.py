"""Knowledge distillation (`trainer.distill.teacher=RUN`): a model learns from a trained one.

The teacher is a run directory (its final `checkpoints/last.pt`) or a checkpoint file.
Offline (the default), it scores every training sample once before training, as it would at
test time (its own preprocessing and test clips, no augmentation). Online
(`trainer.distill.online=true`), it scores each training batch as the student sees it,
augmentation included (the same inputs: same streams and preprocessing), at the cost of its
forward pass in every step. The student trains on

    (1 - w) * its usual loss + w * T^2 * KL(teacher_T || student_T)

where x_T is a softmax at temperature T over the teacher's log-probabilities or the student's
logits (Hinton et al., 2015). Streams trained as an ensemble each learn from the teacher.
Typical use: a slow, accurate recipe (`model=bilstm_4s_st`) teaching the fast default.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F

log = logging.getLogger("skelact")


class Teacher:
    """The teacher's log-probabilities for a training batch, looked up in a table made before
    training (offline) or computed on the batch the student sees (online), and the loss that
    mixes them in (`skelact.losses.step_loss` calls `loss`)."""

    def __init__(
        self, dcfg, table: torch.Tensor | None = None, model: torch.nn.Module | None = None
    ):
        self.dcfg, self.table, self.model = dcfg, table, model

    def log_probs(self, batch: dict, inputs: dict, device) -> torch.Tensor:
        if self.model is None:
            return self.table[batch["index"]].to(device, non_blocking=True)
        with torch.no_grad():
            return F.log_softmax(self.model(inputs)["logits"], -1)

    def loss(self, loss: torch.Tensor, out: dict, batch: dict, inputs: dict, device):
        """The student's usual `loss` with the distillation loss mixed in."""
        return with_distillation(loss, out, self.log_probs(batch, inputs, device), self.dcfg)


def build_teacher(
    cfg: DictConfig, data, split: str, dataset, specs: dict, device
) -> tuple[Teacher, dict]:
    """The teacher of this run (trainer.distill) for `dataset`, the student's training set of
    `split`, and a report for metrics.json. Refuses a teacher of other classes; online, also
    one that reads other inputs than the student."""
    from skelact.checkpoints import load_checkpoint, run_checkpoint
    from skelact.data.run import Data
    from skelact.models.recognizer import build_recognizer

    dcfg = cfg.trainer.distill
    path = run_checkpoint(dcfg.teacher, "trainer.distill.teacher")
    ck = load_checkpoint(path)
    if ck["num_classes"] != data.num_classes:
        raise SystemExit(
            f"trainer.distill.teacher: {path} has {ck['num_classes']} classes, "
            f"this run {data.num_classes}"
        )
    tcfg = OmegaConf.create(ck["config"])
    tcfg.data.ann_file = cfg.data.ann_file  # the teacher's preprocessing on the student's file
    tdata = Data(tcfg)
    tdata.carved = data.carved
    teacher = build_recognizer(tcfg.model, tdata.streams, ck["num_classes"], ck["specs"])
    teacher.load_state_dict(ck["model"])
    teacher.to(device).eval()
    report = {"teacher_checkpoint": str(path)}
    if dcfg.get("online", False):
        plain = {k: {n: v for n, v in s.items() if n != "has"} for k, s in specs.items()}
        same = plain == ck["specs"] and list(tdata.streams) == list(data.streams)
        if not same or _prep(tcfg) != _prep(cfg):
            raise SystemExit(
                f"trainer.distill.online=true: {path} reads other inputs than this run (its "
                "streams or skeleton preprocessing differ); use trainer.distill.online=false"
            )
        return Teacher(dcfg, model=teacher), report
    table, top1 = _score(teacher, tcfg, tdata, split, dataset, cfg.trainer, device)
    log.info(
        "distillation: teacher %s (%s) scores %.4f top-1 on the %d training samples",
        path,
        "+".join(tdata.streams),
        top1,
        len(table),
    )
    return Teacher(dcfg, table=table), {**report, "teacher_train_top1": top1}


def _prep(cfg: DictConfig) -> dict:
    """The skeleton preprocessing of a config, augmentation aside."""
    prep = OmegaConf.to_container(cfg.data.skeleton, resolve=True)
    prep.pop("augment", None)
    prep.pop("test_clips", None)
    prep.pop("test_views", None)
    return prep


def _score(teacher, tcfg, tdata, split: str, dataset, trainer_cfg, device):
    """(N, classes) teacher log-probabilities on `split` as at test time, row i for
    `dataset`'s sample i, and the teacher's top-1 on them."""
    from skelact.data.run import make_loader
    from skelact.engine import evaluate

    tset, _ = tdata.dataset(tcfg.data, split, train=False)
    names = [dataset.name(i) for i in range(len(dataset))]
    if [tset.name(i) for i in range(len(tset))] != names:
        raise SystemExit(
            f"trainer.distill.teacher reads other samples of {split} than this run "
            f"({len(tset)} vs {len(dataset)}); teacher and student need the same inputs"
        )
    loader = make_loader(tset, trainer_cfg, False, eval_mode=True)
    result = evaluate(teacher, loader, device, tdata.streams, show=trainer_cfg.progress)
    scores = np.empty_like(result["scores"])
    scores[result["index"]] = result["scores"]
    labels = np.empty_like(result["labels"])
    labels[result["index"]] = result["labels"]
    top1 = float((scores.argmax(1) == labels).mean())
    return torch.from_numpy(np.log(np.clip(scores, 1e-8, None))).float(), top1


def with_distillation(loss, out: dict, teacher_logp: torch.Tensor, dcfg) -> torch.Tensor:
    """(1 - w) x the usual loss + w x the distillation loss of the fused logits, or of each
    stream of an ensemble, of each replica (summed, as their cross-entropies are)."""
    logits = [
        x
        for o in out.get("members", [out])
        for x in (o["streams"].values() if o.get("independent") else [o["logits"]])
    ]
    kd = sum(distill_loss(x, teacher_logp, dcfg.temperature) for x in logits)
    return (1.0 - dcfg.weight) * loss + dcfg.weight * kd


def distill_loss(logits: torch.Tensor, teacher_logp: torch.Tensor, temperature: float):
    """T^2 KL(softmax(teacher / T) || softmax(logits / T)), mean over the batch."""
    t = temperature
    target = F.log_softmax(teacher_logp / t, -1)
    student = F.log_softmax(logits / t, -1)
    return F.kl_div(student, target, log_target=True, reduction="batchmean") * (t * t)
