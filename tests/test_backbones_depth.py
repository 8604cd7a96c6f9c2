"""The pretrained EfficientNet-Lite0 backbone and UTD-MHAD-style depth (.mat, foreground crop)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from skelact.data.media.depth import (
    foreground_box,
    load_depth_clip,
    person_relative,
    read_depth_mat,
)
from skelact.data.media.video import IMAGENET_MEAN, IMAGENET_STD
from skelact.models.backbones import BACKBONES, build_backbone
from tests.conftest import shared_data

LOUDSPEAKER = 632  # ImageNet class index


def ntu_frame(index: int = 30) -> np.ndarray:
    """Frame `index` of the real NTU clip, RGB uint8 (1080, 1920, 3)."""
    path = shared_data("ntu", "videos", "ntu_sample.avi")
    cap = cv2.VideoCapture(str(path))
    for _ in range(index):
        ok, frame = cap.read()
        assert ok
    cap.release()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def as_input(patch: np.ndarray, size: int = 224) -> torch.Tensor:
    """RGB uint8 patch -> ImageNet-normalised (1, 3, size, size), as skelact.data.media.video."""
    x = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return torch.from_numpy((x - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)[None]


def test_efficientnet_lite0_is_pretrained_without_internet():
    """The packaged weights know ImageNet: the loudspeaker on the wall of a real NTU frame
    (top left, 160 px) is the network's top-1 class; random weights do not find it."""
    frame = ntu_frame()
    speaker = as_input(frame[0:160, 100:260])
    net = build_backbone("efficientnet_lite0", "imagenet", frozen=True).eval()
    with torch.no_grad():
        probs = net.imagenet_logits(speaker).softmax(-1)[0]
    assert probs.argmax().item() == LOUDSPEAKER and probs[LOUDSPEAKER] > 0.1
    torch.manual_seed(0)
    rand = build_backbone("efficientnet_lite0", None, frozen=True).eval()
    with torch.no_grad():
        assert rand.imagenet_logits(speaker).softmax(-1)[0, LOUDSPEAKER] < 0.01


def test_efficientnet_frozen_folding_is_exact_and_shapes():
    """Frozen (BatchNorm folded, channels-last) gives the unfolded network's features; the
    trainable one takes gradients; depth (1 channel) is the grey image replicated to RGB."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 96, 96)
    frozen = build_backbone("efficientnet_lite0", "imagenet", frozen=True).eval()
    plain = build_backbone("efficientnet_lite0", "imagenet", frozen=False).eval()
    with torch.no_grad():
        a, b = frozen(x), plain(x)
    assert a.shape == (2, 3, BACKBONES["efficientnet_lite0"]) and torch.allclose(a, b, atol=1e-4)
    assert sum(p.requires_grad for p in frozen.parameters()) == 0
    depth = torch.rand(1, 2, 1, 64, 64)
    rgb = (depth.expand(-1, -1, 3, -1, -1) - torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)) / (
        torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    )
    with torch.no_grad():
        assert torch.allclose(frozen(depth), frozen(rgb), atol=1e-4)
    plain.train()
    plain(torch.randn(1, 2, 3, 64, 64)).sum().backward()
    assert plain.backbone._conv_head.weight.grad is not None
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        build_backbone("vgg")


def write_mat(path, maps: np.ndarray, name: str = "d_depth") -> None:
    scipy.io.savemat(path, {name: maps.transpose(1, 2, 0)})  # (T, H, W) -> (H, W, T)


def test_depth_mat_foreground_crop_and_person_norm(tmp_path):
    """A (H, W, T) .mat clip: the crop is the square around the non-zero pixels (a 40x100 px
    person at x 150-189, y 60-159 of 240x320), the person depth normalised around its median."""
    maps = np.zeros((10, 240, 320), np.uint16)
    maps[:, 60:160, 150:190] = 2900
    maps[:, 80:90, 190:200] = 2500  # an arm 400 mm nearer, reaching right
    path = tmp_path / "a1_s1_t1_depth.mat"
    write_mat(path, maps)
    assert read_depth_mat(path).shape == (10, 240, 320)
    box = foreground_box([maps[0]], margin=0.0)
    assert box == (125, 60, 225, 160)  # 100 px square centred on x 150-199
    x = load_depth_clip(path, 4, size=100, margin=0.0, norm="person")
    assert x.shape == (4, 1, 100, 100)
    body, arm, background = x[0, 0, 50, 40].item(), x[0, 0, 25, 70].item(), x[0, 0, 50, 5].item()
    assert background == 0.0 and np.isclose(body, 0.1 + 0.9 * 300 / 900)
    assert np.isclose(arm, 0.1 + 0.9 * 700 / 900)  # nearer is brighter
    fixed = load_depth_clip(path, 4, size=100, margin=0.0)
    assert np.isclose(fixed[0, 0, 50, 40].item(), (2900 - 500) / 4000)
    assert np.allclose(person_relative(np.array([0, 3200, 2300]), 2900), [0, 0.1, 1.0])
    write_mat(tmp_path / "two.mat", maps, name="other")
    scipy.io.savemat(tmp_path / "bad.mat", {"a": maps[0], "b": maps[:2].transpose(1, 2, 0)})
    assert read_depth_mat(tmp_path / "two.mat").shape == (10, 240, 320)  # the only 3-D array
    with pytest.raises(OSError, match="bad.mat: no d_depth variable"):
        scipy.io.savemat(tmp_path / "bad.mat", {"a": maps[:2], "b": maps[:3]})
        read_depth_mat(tmp_path / "bad.mat")


def test_real_utd_depth_clip_is_cropped_to_the_person():
    """A real UTD-MHAD depth file: about 8 % of a full 320x240 frame is the person; the square
    crop around it (the person's height plus margins: nearly the frame's height) leaves out
    the empty sides, so the person fills about 1.5x as much of it."""
    path = shared_data("utd_mhad", "Depth", "a1_s1_t1_depth.mat")
    maps = read_depth_mat(path)
    assert maps.shape[1:] == (240, 320) and maps.dtype == np.uint16
    full = (maps > 0).mean()
    x = load_depth_clip(path, 8, size=112, norm="person")
    crop = (x > 0).float().mean().item()
    assert 0.03 < full < 0.15 and crop > 1.4 * full
    rows = (x[:, 0] > 0).any(2).float().mean().item()  # rows with the person in them
    assert rows > 0.6


@pytest.mark.parametrize("arch,dim", [("efficientnet_lite0", 1280), ("resnet18", 512)])
def test_grid_pooling_keeps_where_things_are(arch, dim):
    """grid=2: four cells' features (D * 4); on 128 px frames (4x4 maps, cells of 2x2) their
    mean is the whole-frame feature."""
    torch.manual_seed(0)
    whole = build_backbone(arch, None, frozen=True).eval()
    cells = build_backbone(arch, None, frozen=True, grid=2).eval()
    cells.load_state_dict(whole.state_dict())
    x = torch.randn(1, 2, 3, 128, 128)
    with torch.no_grad():
        g, w = cells(x), whole(x)
    assert g.shape == (1, 2, 4 * dim) and cells.out_dim == 4 * dim
    assert torch.allclose(g.view(1, 2, dim, 4).mean(-1), w, atol=1e-4)


def test_random_weight_features_are_flagged(tmp_path, caplog):
    """A run on features of random weights says so in metrics.json's notes and the log."""
    from skelact.config import compose_config
    from skelact.data.media.features import RANDOM_WEIGHTS, _write_index, feature_provenance

    for name, pretrained in (("rand", None), ("imnet", "imagenet")):
        (tmp_path / name).mkdir()
        settings = {"arch": "efficientnet_lite0", "pretrained": pretrained, "num_frames": 16}
        _write_index(tmp_path / name, {**settings, "size": 160, "feature_dim": 1280}, {})
    (tmp_path / "pix").mkdir()  # the crop itself: no weights to name, its depth scaling kept
    pix = {"arch": "pixels", "pretrained": "imagenet", "num_frames": 16, "size": 160, "grid": 64}
    _write_index(tmp_path / "pix", {**pix, "depth_norm": "person"}, {})
    overrides = ["data=utdmhad_xsub", "data.ann_file=x", "modality=skeleton_depth"]
    pix = feature_provenance(compose_config([*overrides, f"data.depth.features={tmp_path}/pix"]))
    assert pix["depth"]["pretrained"] is None and pix["depth"]["depth_norm"] == "person"
    assert "warning" not in pix["depth"]
    good = feature_provenance(compose_config([*overrides, f"data.depth.features={tmp_path}/imnet"]))
    assert good["depth"]["pretrained"] == "imagenet" and "warning" not in good["depth"]
    bad = feature_provenance(compose_config([*overrides, f"data.depth.features={tmp_path}/rand"]))
    assert bad["depth"]["warning"].startswith(RANDOM_WEIGHTS) and "RANDOM weights" in caplog.text
    assert "--arch pixels, the default" in bad["depth"]["warning"]  # the depth advice, not RGB's
    caplog.clear()  # the fusion fit's run and the main run: the log says it once
    again = feature_provenance(compose_config([*overrides, f"data.depth.features={tmp_path}/rand"]))
    assert again == bad and "RANDOM" not in caplog.text
