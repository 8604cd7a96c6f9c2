"""Knowledge distillation (`trainer.distill.teacher=RUN`): a model learns from a trained one.

The teacher, a run directory (its final `checkpoints/last.pt`) or a checkpoint file, scores
every training sample once before training, as it would at test time (its own preprocessing
and test clips, no augmentation). The student then trains on

    (1 - w) * its usual loss + w * T^2 * KL(teacher_T || student_T)

where x_T is a softmax at temperature T over the teacher's log-probabilities or the student's
logits (Hinton et al., 2015). Streams trained as an ensemble each learn from the teacher.
Typical use: a slow, accurate recipe (`model=bilstm_4s_st`) teaching the fast default.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn import functional as F

log = logging.getLogger("skelact")


def teacher_checkpoint(path: str | Path) -> Path:
    """The checkpoint a teacher path names: a file as it is, a run directory's last.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise SystemExit(
            f"trainer.distill.teacher: {path} does not exist; give a run directory of "
            "`skelact train` or one of its checkpoints"
        )
    return path


def teacher_log_probs(
    cfg: DictConfig, data, split: str, dataset, device
) -> tuple[torch.Tensor, dict]:
    """(N, classes) log-probabilities of the teacher on `split`, row i for `dataset`'s sample i
    (the student's training set), and a report for metrics.json. Refuses a teacher of other
    classes or other samples."""
    from skelact.data.run import Data, make_loader
    from skelact.engine import evaluate, load_checkpoint
    from skelact.models.recognizer import build_recognizer

    path = teacher_checkpoint(cfg.trainer.distill.teacher)
    ck = load_checkpoint(path)
    if ck["num_classes"] != data.num_classes:
        raise SystemExit(
            f"trainer.distill.teacher: {path} has {ck['num_classes']} classes, "
            f"this run {data.num_classes}"
        )
    tcfg = OmegaConf.create(ck["config"])
    # the teacher's preprocessing and model on the student's annotation file and split
    tcfg.data.ann_file = cfg.data.ann_file
    tdata = Data(tcfg)
    tdata.carved = data.carved
    tset, specs = tdata.dataset(tcfg.data, split, train=False)
    names = [dataset.name(i) for i in range(len(dataset))]
    if [tset.name(i) for i in range(len(tset))] != names:
        raise SystemExit(
            f"trainer.distill.teacher: {path} reads other samples of {split} than this run "
            f"({len(tset)} vs {len(dataset)}); teacher and student need the same inputs"
        )
    teacher = build_recognizer(tcfg.model, tdata.streams, ck["num_classes"], ck["specs"])
    teacher.load_state_dict(ck["model"])
    teacher.to(device)
    loader = make_loader(tset, cfg.trainer, False, eval_mode=True)
    result = evaluate(teacher, loader, device, tdata.streams, show=cfg.trainer.progress)
    scores = np.empty_like(result["scores"])
    scores[result["index"]] = result["scores"]
    labels = np.empty_like(result["labels"])
    labels[result["index"]] = result["labels"]
    top1 = float((scores.argmax(1) == labels).mean())
    log.info(
        "distillation: teacher %s (%s) scores %.4f top-1 on the %d training samples",
        path,
        "+".join(tdata.streams),
        top1,
        len(labels),
    )
    logp = torch.from_numpy(np.log(np.clip(scores, 1e-8, None))).float()
    return logp, {"teacher_checkpoint": str(path), "teacher_train_top1": top1}


def with_distillation(loss, out: dict, teacher_logp: torch.Tensor, dcfg) -> torch.Tensor:
    """(1 - w) x the usual loss + w x the distillation loss of the fused logits, or of each
    stream of an ensemble (summed, as their cross-entropies are)."""
    if out.get("independent"):
        logits = list(out["streams"].values())
    else:
        logits = [out["logits"]]
    kd = sum(distill_loss(x, teacher_logp, dcfg.temperature) for x in logits)
    return (1.0 - dcfg.weight) * loss + dcfg.weight * kd


def distill_loss(logits: torch.Tensor, teacher_logp: torch.Tensor, temperature: float):
    """T^2 KL(softmax(teacher / T) || softmax(logits / T)), mean over the batch."""
    t = temperature
    target = F.log_softmax(teacher_logp / t, -1)
    student = F.log_softmax(logits / t, -1)
    return F.kl_div(student, target, log_target=True, reduction="batchmean") * (t * t)
