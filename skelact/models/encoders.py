"""Per-frame spatial encoders: every frame of a stream becomes one feature vector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skelact.data.media.video import IMAGENET_MEAN, IMAGENET_STD


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
        return FeatureProjector(spec["feature_dim"], cfg.embed, cfg.dropout), cfg.embed
    if stream in ("rgb", "depth"):
        resnet = FrameResNet(
            cfg.arch, cfg.pretrained, spec["in_channels"], cfg.frozen, cfg.weights_file
        )
        proj = FeatureProjector(resnet.out_dim, cfg.embed, cfg.dropout)
        return nn.Sequential(resnet, proj), cfg.embed
    raise ValueError(f"no encoder for stream {stream!r}")


class FeatureProjector(nn.Module):
    """Per-frame projection of cached (or freshly computed) CNN features: (N, T, D) -> (N, T, E)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, out_dim), nn.GELU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


# --- RGB / depth frames -------------------------------------------------------------------

_RESNET_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def _imagenet_weights(arch: str):
    import torchvision.models as tvm

    return {
        "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
        "resnet34": tvm.ResNet34_Weights.IMAGENET1K_V1,
        "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1,
    }[arch]


def load_imagenet_state(arch: str, weights_file: str | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet state dict for `arch`: from `weights_file`, else torch's hub cache
    (torch.hub.get_dir()/checkpoints/), else downloaded there. Raises RuntimeError saying how to
    proceed when it cannot be had; never falls back to random weights."""
    import os
    import socket
    from pathlib import Path

    weights = _imagenet_weights(arch)
    filename = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    path = Path(weights_file) if weights_file else cached
    if weights_file and not path.is_file():
        raise FileNotFoundError(f"{arch} weights_file {path} does not exist")
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure means an unusable checkpoint
            raise RuntimeError(
                f"{arch} ImageNet weights {path}: not a readable checkpoint "
                f"({err}); delete it or pass another weights_file"
            ) from err
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine must fail, not hang
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu")
    except OSError as err:  # URLError, HTTPError, socket timeouts
        raise RuntimeError(
            f"pretrained=imagenet: could not download the {arch} ImageNet weights from "
            f"{weights.url} ({err}). Torch looks for them at {cached}. To proceed: copy "
            f"{filename} there, or pass its path as weights_file "
            f"(model.<stream>.weights_file=/path/{filename}), or set pretrained=null to train "
            f"from random weights on purpose."
        ) from err
    finally:
        socket.setdefaulttimeout(old_timeout)


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


class DepthConv1(nn.Module):
    """conv1 for depth in [0, 1]: (B, 1, H, W) -> (B, 64, H/2, W/2).

    Equal to replicating depth to RGB, normalising with ImageNet's mean and std and applying
    the RGB conv1, with the normalisation folded into the weights: one kernel for the depth,
    one for a constant-1 channel that carries the mean shift (so the zero padding at the
    borders stays exact).
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        w = conv.weight.detach()  # (64, 3, k, k)
        scale = (w / _STD.view(1, 3, 1, 1)).sum(1, keepdim=True)
        shift = -(w * (_MEAN / _STD).view(1, 3, 1, 1)).sum(1, keepdim=True)
        self.weight = nn.Parameter(torch.cat([scale, shift], 1))  # (64, 2, k, k)
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, torch.ones_like(x)], 1)  # (B, 2, H, W)
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)


class FrameResNet(nn.Module):
    """A torchvision ResNet applied to every frame: input (N, T, C, H, W) -> output (N, T, D).

    D = 512 for resnet18/34, 2048 for resnet50 (the pooled features; the classifier is dropped).
    Frames run as one batch of N*T. Input is expected normalised with ImageNet mean/std (RGB,
    `skelact.data.video`) or in [0, 1] (depth, `skelact.data.depth`). Depth is fed as a grey
    image: replicated to RGB and ImageNet-normalised, so conv1 and its BatchNorm see inputs of
    the scale they were trained on. With in_channels=3 a 1-channel input is replicated and
    normalised so; in_channels=1 folds both into conv1 (`DepthConv1`): the same output, cheaper.
    frozen=True: no parameter takes gradients and BatchNorm stays in eval mode even while the
    parent model trains (its running statistics are the pretrained ones).
    """

    def __init__(
        self,
        arch: str = "resnet18",
        pretrained: str | None = None,
        in_channels: int = 3,
        frozen: bool = True,
        weights_file: str | None = None,
    ):
        super().__init__()
        import torchvision.models as tvm

        if arch not in _RESNET_DIMS:
            raise ValueError(f"FrameResNet: arch must be one of {sorted(_RESNET_DIMS)}, got {arch}")
        if pretrained not in (None, "imagenet"):
            raise ValueError(f"FrameResNet: pretrained must be imagenet or None, got {pretrained}")
        if in_channels not in (1, 3):
            raise ValueError(f"FrameResNet: in_channels must be 1 or 3, got {in_channels}")
        net = getattr(tvm, arch)(weights=None)
        if pretrained == "imagenet":
            net.load_state_dict(load_imagenet_state(arch, weights_file))
        if in_channels == 1:
            net.conv1 = DepthConv1(net.conv1)
        net.fc = nn.Identity()
        self.backbone = net
        self.in_channels = in_channels
        self.out_dim = _RESNET_DIMS[arch]
        self.frozen = frozen
        if frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> FrameResNet:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = x.shape
        x = x.reshape(n * t, c, h, w)
        if c == 1 and self.in_channels == 3:
            x = (x - _MEAN.to(x)) / _STD.to(x)  # depth as a grey image, ImageNet-normalised
        elif c != self.in_channels:
            raise ValueError(f"FrameResNet: expected {self.in_channels} channels, got {c}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats = self.backbone(x)  # (N*T, D)
        return feats.reshape(n, t, self.out_dim)  # (N, T, D)
