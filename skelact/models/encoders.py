"""Per-frame spatial encoders: every frame of a stream becomes one feature vector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# the per-frame CNNs of the RGB and depth streams live in backbones.py
from skelact.data.prep.channels import paired_columns
from skelact.models.backbones import BACKBONES, FrameResNet, build_backbone  # noqa: F401
from skelact.models.dropout import Dropout


class JointMLP(nn.Module):
    """Encode the joints of each body in each frame with a shared MLP, then join the bodies.

    Input (N, M, T, V, C) -> output (N, T, D). Both bodies go through the same weights (a
    person is a person), then their features are concatenated in body order, so the two roles
    stay distinct for the recurrent core: body 0 is the sample's first body (the most active
    for NTU and videos; SBU's person A, as its files list them).

    `joint_kernel` > 0: before the MLP, every joint's channels also go through a convolution
    over that many frames (`JointTemporalConv`, `joint_width` outputs, the same weights for
    every joint and body), and those outputs join the joint's channels: the MLP sees each
    joint's own short-term motion pattern, not only its position in this frame.

    `pairs` (keep, twin, sign), from `paired_columns`: the input repeats columns (a distance
    stream holds each pair of joints twice), so the first layer reads only the kept ones, by
    the weights folded onto them. The same function, parameters and gradients as the layer
    over every column (state dicts are interchangeable), with about half its products on the
    distance stream. Used only where the first layer reads the raw columns (no `input_norm`,
    no `joint_kernel`).
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
        joint_kernel: int = 0,
        joint_width: int = 16,
        pairs: tuple | None = None,
    ):
        super().__init__()
        self.folded = pairs is not None and not input_norm and not joint_kernel
        if self.folded:  # not in the state dict: derived from the stream's channel kinds
            keep = [int(k) for k in pairs[0]]
            # the kept columns as runs of neighbours: slices concatenated read them about 5x
            # faster than an index does
            cuts = [i for i in range(1, len(keep)) if keep[i] != keep[i - 1] + 1]
            self.fold_runs = [
                (keep[a], keep[b - 1] + 1)
                for a, b in zip([0, *cuts], [*cuts, len(keep)], strict=True)
            ]
            for name, value in zip(("keep", "twin", "sign"), pairs, strict=True):
                self.register_buffer(f"fold_{name}", torch.as_tensor(value), persistent=False)
        self.joint_conv = (
            JointTemporalConv(in_channels, joint_width, joint_kernel) if joint_kernel else None
        )
        width = in_channels + (joint_width if joint_kernel else 0)
        # joints, velocities and bones differ in scale by 10x: BatchNorm per input channel
        # puts them on one footing (ST-GCN's data_bn)
        self.input_norm = nn.BatchNorm1d(num_joints * in_channels) if input_norm else None
        self.mlp = nn.Sequential(
            nn.Linear(num_joints * width, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            Dropout(dropout),
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
        if self.joint_conv is not None:
            x = x.reshape(n, m, t, v, c)
            x = torch.cat([x, self.joint_conv(x)], -1).reshape(n, m, t, -1)
        if self.folded:
            first = self.mlp[0]
            w = first.weight[:, self.fold_keep] + first.weight[:, self.fold_twin] * self.fold_sign
            kind = x.device.type
            if torch.is_autocast_enabled(kind):  # the linear casts x anyway: gather half the bytes
                x = x.to(torch.get_autocast_dtype(kind))
            x = torch.cat([x[..., a:b] for a, b in self.fold_runs], -1)
            h = self.mlp[1:](F.linear(x, w, first.bias))
        else:
            h = self.mlp(x)  # (N, M, T, H)
        h = h.permute(0, 2, 1, 3).reshape(n, t, -1)  # (N, T, M*H)
        return self.merge(h)  # (N, T, D)


class JointTemporalConv(nn.Module):
    """(N, M, T, V, C) -> (N, M, T, V, W): a convolution over `kernel` frames of each joint's
    C channels (zero padded at the ends; one set of weights for every joint and body), then
    GELU."""

    def __init__(self, in_channels: int, width: int, kernel: int):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"model.skeleton.joint_kernel must be odd, got {kernel}")
        self.conv = nn.Conv2d(in_channels, width, (kernel, 1), padding=(kernel // 2, 0))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m, t, v, c = x.shape
        y = self.conv(x.reshape(n * m, t, v, c).permute(0, 3, 1, 2))  # (N*M, W, T, V)
        return self.act(y).permute(0, 2, 3, 1).reshape(n, m, t, v, -1)


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
            gcn.get("temporal_kernel", 0),
        )
        return enc, cfg.embed
    if stream == "skeleton":
        kinds = spec.get("kinds")  # absent in checkpoints before f1b0ce7: every column read
        pairs = paired_columns(kinds, spec["channels"], spec["num_joints"]) if kinds else None
        enc = JointMLP(
            spec["num_joints"],
            spec["channels"],
            spec["num_bodies"],
            cfg.hidden,
            cfg.embed,
            cfg.dropout,
            cfg.get("input_norm", False),
            cfg.get("joint_kernel", 0),
            cfg.get("joint_width", 16),
            pairs,
        )
        return enc, cfg.embed
    if stream in ("rgb", "depth"):
        return _image_encoder(stream, cfg, spec), cfg.embed
    raise ValueError(f"no encoder for stream {stream!r}")


def _image_encoder(stream: str, cfg, spec: dict) -> nn.Module:
    """RGB / depth: per-frame features (cached, or a frozen backbone on frames), a CNN trained
    here when they are pixels (`model.<stream>.encoder`), then the projection."""
    from skelact.data.media.features import CHANNELS, PIXELS_GRID

    motion = cfg.get("motion", False)
    if cfg.input == "features":
        made = spec.get("extractor") or {}
        arch, grid, dim, front = made.get("arch"), made.get("grid", 1), spec["feature_dim"], []
    else:
        arch, grid = cfg.arch, cfg.get("grid", PIXELS_GRID if cfg.arch == "pixels" else 1)
        front = [
            build_backbone(
                arch, cfg.pretrained, spec["in_channels"], cfg.frozen, cfg.weights_file, grid
            )
        ]
        dim = front[0].out_dim
    kind = cfg.get("encoder", "auto")
    if kind == "auto":
        kind = "cnn" if arch == "pixels" else "linear"
    if kind == "cnn":
        if arch != "pixels":
            raise ValueError(
                f"model.{stream}.encoder=cnn trains on pixels (skelact prepare features "
                f"--modality {stream} --arch pixels); these features come from "
                f"{arch or 'an unknown encoder'}"
            )
        front.append(
            PixelCNN(CHANNELS[stream], grid, cfg.get("cnn_width", 32), cfg.get("shift", 4))
        )
        dim = front[-1].out_dim
    elif kind != "linear":
        raise ValueError(f"model.{stream}.encoder must be auto, linear or cnn, got {kind!r}")
    return nn.Sequential(*front, FeatureProjector(dim, cfg.embed, cfg.dropout, motion))


class PixelCNN(nn.Module):
    """A small CNN trained from scratch on every frame of a pixels cache: (N, T, C g^2) ->
    (N, T, 2 width (g/16)^2).

    Each frame is a C x g x g image (`prepare features --arch pixels`); its difference from the
    previous frame is stacked beside it as C more channels, so the network sees what moved.
    Four 3x3 stride-2 convolutions (BatchNorm, ReLU) keep a coarse map of where things are,
    which is flattened. Training shifts each batch's frames by up to `shift` cells (zero
    padded): people stand a little off the crop's centre.
    """

    def __init__(self, channels: int, grid: int, width: int = 32, shift: int = 4):
        super().__init__()
        if grid < 16:
            raise ValueError(f"PixelCNN: needs a pixels grid of at least 16, got {grid}")
        self.channels, self.grid, self.shift = channels, grid, shift

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
            )

        w = width
        self.net = nn.Sequential(
            block(2 * channels, w // 2), block(w // 2, w), block(w, 2 * w), block(2 * w, 2 * w)
        )
        side = grid
        for _ in range(4):
            side = (side + 1) // 2
        self.out_dim = 2 * w * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        g, c = self.grid, self.channels
        if d != c * g * g:
            raise ValueError(f"PixelCNN: expected {c} x {g} x {g} = {c * g * g} features, got {d}")
        x = x.reshape(n, t, c, g, g)
        if self.training and self.shift:
            p = self.shift
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = nn.functional.pad(x, (p, p, p, p))[..., dy : dy + g, dx : dx + g]
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)
        h = self.net(torch.cat([x, diff], 2).flatten(0, 1))  # (N*T, 2w, g/16, g/16)
        return h.reshape(n, t, -1)


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
            nn.LayerNorm(width), Dropout(dropout), nn.Linear(width, out_dim), nn.GELU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.motion:
            diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], 1)  # (N, T, D)
            x = torch.cat([x, diff], -1)  # (N, T, 2D)
        return self.proj(x)
