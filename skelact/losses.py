"""What a training step minimises: the model's forward pass under autocast, the streams'
cross-entropy with the optional terms (mutual learning, view consistency), and the two ways a
step changes what that loss is computed on (mixup's blended batch, SAM's perturbed weights)."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from skelact.fusion import groups_of


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


def training_forward(model: nn.Module, inputs: dict, dtype: torch.dtype | None) -> dict:
    """The model's forward pass of a training step: under autocast to `dtype` (None: float32),
    its logits returned in float32 for the losses."""
    device = next(iter(inputs.values())).device.type
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(inputs)
    return float_outputs(out)


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
