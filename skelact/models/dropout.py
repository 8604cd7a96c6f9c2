"""Dropout with a cheaper random mask on the CPU.

On one CPU thread torch's dropout spends about 9 ns per element drawing its Bernoulli mask:
6-7 % of a training step of the default model, more with the graph encoder. Here each element
takes 16 bits of one 64-bit random integer from torch's generator, and is kept when they
exceed p of their range: the same keep probability (to 1 part in 65,536), the same
1 / (1 - p) scaling, 1.0-2.2x faster on a (8192, 128) activation (forward, 4 timings on
one idle core, 2026-12-04; the training step: BENCHMARKS.md, issue 17). On other devices,
and in evaluation, it is `torch.nn.functional.dropout`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_INT16_MIN = -(2**15)


class Dropout(nn.Module):
    """A drop-in for `nn.Dropout(p)` (no parameters: checkpoints load either way)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        # int16 values below this are dropped: round(p * 65536) of the 65536
        self.threshold = _INT16_MIN + round(p * 2**16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or not x.is_floating_point():
            return F.dropout(x, self.p, True)
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        bits = words.view(torch.int16)[:n].view(x.shape)
        keep = (bits >= self.threshold).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"
