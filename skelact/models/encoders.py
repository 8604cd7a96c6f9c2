"""Per-frame spatial encoders: every frame of a stream becomes one feature vector."""

from __future__ import annotations

import torch
from torch import nn

# the per-frame CNNs of the RGB and depth streams live in backbones.py
from skelact.models.backbones import BACKBONES, FrameResNet, build_backbone  # noqa: F401


class JointMLP(nn.Module):
    """Encode the joints of each body in each frame with a shared MLP, then join the bodies.

    Input (N, M, T, V, C) -> output (N, T, D). Both bodies go through the same weights (a
    person is a person), then their features are concatenated in body order: body 0 is the
    most active actor, so the roles of actor and partner stay distinct for the recurrent core.
    """

    def __init__(
        self,
        num_joints: int,
        in_channels: int,
        num_bodies: int,
        hidden: int = 256,
        out_dim: int = 256,
        dropout: float = 0.0,
        input_norm: bool = False,
    ):
        super().__init__()
        # joints, velocities and bones differ in scale by 10x: BatchNorm per input channel
        # puts them on one footing (ST-GCN's data_bn)
        self.input_norm = nn.BatchNorm1d(num_joints * in_channels) if input_norm else None
        self.mlp = nn.Sequential(
            nn.Linear(num_joints * in_channels, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
        )
        self.merge = nn.Linear(num_bodies * hidden, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m, t, v, c = x.shape
        x = x.reshape(n, m, t, v * c)
        if self.input_norm is not None:
            x = self.input_norm(x.reshape(-1, v * c)).reshape(n, m, t, v * c)
        h = self.mlp(x)  # (N, M, T, H)
        h = h.permute(0, 2, 1, 3).reshape(n, t, -1)  # (N, T, M*H)
        return self.merge(h)  # (N, T, D)


def build_encoder(stream: str, cfg, spec: dict) -> tuple[nn.Module, int]:
    """The per-frame encoder of one stream and its output width."""
    if stream == "skeleton" and cfg.get("encoder", "mlp") == "gcn":
        from skelact.layouts import get_layout
        from skelact.models.graph import GraphEncoder

        layout = get_layout(spec.get("layout", "generic"), spec["num_joints"])
        gcn = cfg.get("gcn", {})
        enc = GraphEncoder(
            layout,
            spec["channels"],
            spec["num_bodies"],
            gcn.get("width", 64),
            gcn.get("layers", 3),
            cfg.hidden,
            cfg.embed,
            cfg.dropout,
            gcn.get("pool", "flatten"),
        )
        return enc, cfg.embed
    if stream == "skeleton":
        enc = JointMLP(
            spec["num_joints"],
            spec["channels"],
            spec["num_bodies"],
            cfg.hidden,
            cfg.embed,
            cfg.dropout,
            cfg.get("input_norm", False),
        )
        return enc, cfg.embed
    if stream in ("rgb", "depth") and cfg.input == "features":
        motion = cfg.get("motion", False)
        return FeatureProjector(spec["feature_dim"], cfg.embed, cfg.dropout, motion), cfg.embed
    if stream in ("rgb", "depth"):
        cnn = build_backbone(
            cfg.arch, cfg.pretrained, spec["in_channels"], cfg.frozen, cfg.weights_file
        )
        proj = FeatureProjector(cnn.out_dim, cfg.embed, cfg.dropout, cfg.get("motion", False))
        return nn.Sequential(cnn, proj), cfg.embed
    raise ValueError(f"no encoder for stream {stream!r}")


class FeatureProjector(nn.Module):
    """Per-frame projection of cached (or freshly computed) CNN features: (N, T, D) -> (N, T, E).

    motion: the features' frame-to-frame differences (zero for the first frame) are
    projected beside them: what changes between frames is the action, what stays is the
    person and the scene.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0, motion: bool = False):
        super().__init__()
        self.motion = motion
        width = 2 * in_dim if motion else in_dim
        self.proj = nn.Sequential(
            nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, out_dim), nn.GELU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.motion:
            diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)  # (N, T, D)
            x = torch.cat([x, diff], -1)  # (N, T, 2D)
        return self.proj(x)
