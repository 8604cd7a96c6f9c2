"""The recurrent core over per-frame features and temporal attention pooling."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn


class RecurrentCore(nn.Module):
    """LSTM or GRU over time, uni- or bidirectional, 1..N layers: (N, T, D) -> (N, T, H*dirs).

    Training in float32 on a CPU runs torch's own LSTM rather than oneDNN's: the same function,
    1.03-1.06x the default's training speed on an AVX2 CPU (BENCHMARKS.md, "Torch's own LSTM in
    float32 training"). Inference and bfloat16 autocast keep oneDNN, faster there.
    `native_training` False keeps oneDNN in float32 training too (for comparison).
    """

    native_training = True

    def __init__(
        self,
        in_dim: int,
        hidden: int = 256,
        layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if rnn is None:
            raise ValueError(f"unknown recurrent cell {cell!r}; use 'lstm' or 'gru'")
        # torch applies `dropout` between stacked layers only
        self.rnn = rnn(
            in_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.out_dim = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        native = self.native_training and _float32_cpu_training(x)
        with _without_onednn() if native else contextlib.nullcontext():
            out, _ = self.rnn(x)
        return out  # (N, T, H*dirs)


@contextlib.contextmanager
def _without_onednn():
    """oneDNN off for the block, every other backend flag as it was."""
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


def _float32_cpu_training(x: torch.Tensor) -> bool:
    """Gradients wanted for float32 CPU input outside autocast."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


class TemporalAttention(nn.Module):
    """Softmax attention over time: (N, T, D) -> pooled (N, D * heads) and weights (N, T).

    Scores come from a small MLP per frame; the weights are returned so a user can see which
    frames decided the prediction. `mask` (N, T) bool, True where a frame holds data: frames
    without it get no weight (a clip with no such frame keeps all its frames). `heads` > 1:
    that many score columns from the same MLP, each pooling the whole clip its own way, the
    pooled vectors joined; the weights returned are their mean.
    """

    def __init__(self, dim: int, hidden: int = 128, heads: int = 1):
        super().__init__()
        if heads < 1:
            raise ValueError(f"TemporalAttention: heads must be >= 1, got {heads}")
        self.heads = heads
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, heads))
        self.out_dim = dim * heads

    def forward(
        self, h: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(h)  # (N, T, heads)
        if mask is not None:
            mask = mask | ~mask.any(1, keepdim=True)  # an empty clip keeps every frame
            scores = scores.masked_fill(~mask[..., None], -1e9)  # finite: exports to ONNX as is
        weights = torch.softmax(scores, dim=1)  # (N, T, heads)
        if self.heads == 1:
            weights = weights.squeeze(-1)
            return torch.einsum("nt,ntd->nd", weights, h), weights  # (N, D), (N, T)
        pooled = torch.einsum("nth,ntd->nhd", weights, h).flatten(1)  # (N, heads * D)
        return pooled, weights.mean(-1)


class TemporalConv(nn.Module):
    """Local motion over `kernel` frames before the recurrent core: (N, T, D) -> (N, T, D).

    A residual 1-D convolution over time on the per-frame features (same length, zero padded).
    `dilations`: one convolution per dilation, their outputs summed, so (1, 2) also sees
    2 * (kernel - 1) + 1 frames with no more weights per branch than the first.
    """

    def __init__(self, dim: int, kernel: int = 5, dilations: Sequence[int] = (1,)):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"TemporalConv: kernel must be odd and positive, got {kernel}")
        if not dilations or min(dilations) < 1:
            raise ValueError(f"TemporalConv: dilations must be positive, got {list(dilations)}")
        first, *more = (int(d) for d in dilations)
        self.conv = _dilated(dim, kernel, first)
        self.wide = nn.ModuleList(_dilated(dim, kernel, d) for d in more)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # (N, D, T)
        y = self.conv(xt)
        for conv in self.wide:
            y = y + conv(xt)
        return x + self.act(self.norm(y.transpose(1, 2)))


def _dilated(dim: int, kernel: int, dilation: int) -> nn.Conv1d:
    """A same-length convolution over time with `dilation` frames between its taps."""
    return nn.Conv1d(dim, dim, kernel, padding=dilation * (kernel // 2), dilation=dilation)
