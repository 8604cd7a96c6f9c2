"""Streams (encoder -> recurrent core -> attention) and their late fusion in the classifier."""

from __future__ import annotations

import torch
from torch import nn

from skelact.models.temporal import RecurrentCore, TemporalAttention


class Stream(nn.Module):
    """One modality: per-frame encoder -> recurrent core -> attention -> clip embedding.

    Input is what the encoder takes with time in dim 1 ((N, M, T, V, C) for skeletons is
    handled by the encoder itself); output embedding (N, E) and attention (N, T).
    `skeleton`: the input is (N, M, T, V, C) and frames where every body is all zeros (no one
    there) are masked out of the attention.
    """

    def __init__(
        self,
        encoder: nn.Module,
        enc_dim: int,
        core_cfg,
        attn_hidden: int,
        dropout: float,
        skeleton: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.skeleton = skeleton
        self.core = RecurrentCore(
            enc_dim,
            core_cfg.hidden,
            core_cfg.layers,
            core_cfg.cell,
            core_cfg.bidirectional,
            core_cfg.dropout,
        )
        self.attention = TemporalAttention(self.core.out_dim, attn_hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = self.core.out_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.core(self.encoder(x))  # (N, T, H)
        mask = x.abs().amax(dim=(1, 3, 4)) > 0 if self.skeleton else None  # (N, T)
        emb, weights = self.attention(h, mask)
        return self.dropout(emb), weights


class Recognizer(nn.Module):
    """Streams fused late in the classifier.

    fusion "concat": embeddings concatenated -> MLP; "mean": per-stream logits averaged;
    "weighted": softmax-learned weights over per-stream logits. Per-stream heads always exist
    so every stream can be scored alone (and trained with an auxiliary loss).
    """

    def __init__(
        self,
        streams: dict[str, Stream],
        num_classes: int,
        fusion: str = "concat",
        fusion_hidden: int = 256,
        dropout: float = 0.0,
    ):
        super().__init__()
        if fusion not in ("concat", "mean", "weighted"):
            raise ValueError(f"unknown fusion {fusion!r}; use concat, mean or weighted")
        self.streams = nn.ModuleDict(streams)
        self.heads = nn.ModuleDict(
            {k: nn.Linear(s.out_dim, num_classes) for k, s in streams.items()}
        )
        self.fusion = fusion
        if fusion == "concat" and len(streams) > 1:
            total = sum(s.out_dim for s in streams.values())
            self.fuse = nn.Sequential(
                nn.Linear(total, fusion_hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(fusion_hidden, num_classes),
            )
        if fusion == "weighted" and len(streams) > 1:
            self.stream_logit_weights = nn.Parameter(torch.zeros(len(streams)))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict:
        embs, logits, attention = {}, {}, {}
        for name, stream in self.streams.items():
            embs[name], attention[name] = stream(inputs[name])
            logits[name] = self.heads[name](embs[name])  # (N, classes)
        if len(self.streams) == 1:
            fused = next(iter(logits.values()))
        elif self.fusion == "concat":
            fused = self.fuse(torch.cat([embs[k] for k in self.streams], -1))
        elif self.fusion == "mean":
            fused = torch.stack([logits[k] for k in self.streams]).mean(0)
        else:
            w = torch.softmax(self.stream_logit_weights, 0)
            fused = torch.einsum("s,snc->nc", w, torch.stack([logits[k] for k in self.streams]))
        return {"logits": fused, "streams": logits, "attention": attention}


def build_recognizer(
    mcfg, streams: list[str], num_classes: int, specs: dict[str, dict]
) -> Recognizer:
    """Build the model from the `model` config node for the streams the modality asks for.

    `specs[stream]` describes the input: skeleton {"num_joints", "channels", "num_bodies"};
    rgb/depth {"feature_dim"} when reading cached features, or {"in_channels"} for frames.
    """
    from skelact.models.encoders import build_encoder  # encoders import torchvision lazily

    built = {}
    for name in streams:
        encoder, enc_dim = build_encoder(name, mcfg[name], specs[name])
        built[name] = Stream(
            encoder,
            enc_dim,
            mcfg.core,
            mcfg.attention_hidden,
            mcfg.dropout,
            skeleton="num_joints" in specs[name],
        )
    return Recognizer(built, num_classes, mcfg.fusion, mcfg.fusion_hidden, mcfg.dropout)
