"""How the weights move: the optimizer, the learning-rate schedule, the weight average."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


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
