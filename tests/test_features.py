"""FrameResNet and the feature cache (extract_features / load_features)."""

from __future__ import annotations

import json
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torch import nn

from skelact.data.datasets import feature_dim
from skelact.data.formats.annotations import save_annotations
from skelact.data.media.depth import load_depth_clip
from skelact.data.media.features import extract_features, load_features
from skelact.data.media.video import load_rgb_clip
from skelact.models.encoders import FrameResNet
from tests.conftest import shared_data
from tests.test_video_depth import person_xy, write_depth_fixture


@pytest.mark.parametrize("arch,size,dim", [("resnet18", 64, 512), ("resnet50", 32, 2048)])
def test_frame_resnet_shapes(arch, size, dim):
    enc = FrameResNet(arch, pretrained=None, frozen=False)
    out = enc(torch.randn(2, 3, 3, size, size))
    assert out.shape == (2, 3, dim) and enc.out_dim == dim and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_frozen_resnet_stays_frozen():
    enc = FrameResNet("resnet18", pretrained=None, frozen=True)
    assert sum(p.requires_grad for p in enc.parameters()) == 0
    enc.train()  # a parent model going to training mode must not touch BatchNorm statistics
    assert not any(m.training for m in enc.backbone.modules())
    before = enc.backbone.bn1.running_mean.clone()
    out = enc(torch.randn(1, 2, 3, 32, 32) * 5 + 3)
    assert torch.equal(before, enc.backbone.bn1.running_mean) and not out.requires_grad


def test_depth_conv1_folds_the_imagenet_normalisation(clip):
    """Depth in [0, 1] through the folded conv1 equals the RGB network on the depth replicated
    to RGB and ImageNet-normalised, borders included; its features then have the scale of a
    real RGB frame's, where summing conv1 over RGB (the old stem) gave about 4x less."""
    from skelact.data.media.video import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    rgb = FrameResNet("resnet18", in_channels=3).eval()
    one = FrameResNet("resnet18", in_channels=1).eval()
    one.backbone.load_state_dict(
        {k: v for k, v in rgb.backbone.state_dict().items() if k != "conv1.weight"}, strict=False
    )
    one.backbone.conv1 = type(one.backbone.conv1)(rgb.backbone.conv1)
    depth = torch.zeros(1, 2, 1, 64, 64)
    depth[..., 8:60, 20:44] = torch.rand(1, 2, 1, 52, 24) * 0.2 + 0.4  # a person at ~2.5 m
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    by_hand = rgb((depth.expand(-1, -1, 3, -1, -1) - mean) / std)
    with torch.no_grad():
        torch.testing.assert_close(one(depth), by_hand, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(rgb(depth), by_hand, atol=1e-4, rtol=1e-4)
        frame = load_rgb_clip(clip, 2, size=64)[None]  # (1, 2, 3, 64, 64), ImageNet-normalised
        ratio = one(depth).norm(dim=-1).mean() / rgb(frame).norm(dim=-1).mean()
        old = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        old.weight.data = rgb.backbone.conv1.weight.sum(1, keepdim=True)
        one.backbone.conv1 = old
        old_ratio = one(depth).norm(dim=-1).mean() / rgb(frame).norm(dim=-1).mean()
    print(f"depth/rgb feature norm: folded {ratio:.2f}, old summed conv1 {old_ratio:.2f}")
    assert 0.5 < ratio < 2.0 and old_ratio < 0.4 * ratio
    with pytest.raises(ValueError, match="expected 1 channels, got 3"):
        one(torch.rand(1, 2, 3, 48, 48))


def test_imagenet_offline_error_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # empty cache

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    with pytest.raises(RuntimeError) as err:
        FrameResNet("resnet18", pretrained="imagenet")
    msg = str(err.value)
    assert "could not download the resnet18 ImageNet weights" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "weights_file" in msg and "pretrained=null" in msg


def test_imagenet_from_weights_file_and_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    torch.manual_seed(1)
    src = FrameResNet("resnet18").backbone
    state = {k: v for k, v in src.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    enc = FrameResNet("resnet18", pretrained="imagenet", weights_file=str(path))
    assert torch.equal(enc.backbone.conv1.weight, src.conv1.weight)
    with pytest.raises(FileNotFoundError, match="nowhere.pth does not exist"):
        FrameResNet("resnet18", pretrained="imagenet", weights_file=str(tmp_path / "nowhere.pth"))
    cached = tmp_path / "hub" / "checkpoints" / path.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    with pytest.raises(RuntimeError, match="not a readable checkpoint"):
        FrameResNet("resnet18", pretrained="imagenet")
    path.replace(cached)  # a good file in torch's cache is used without any download
    assert torch.equal(
        FrameResNet(pretrained="imagenet").backbone.layer4[1].bn2.weight, src.layer4[1].bn2.weight
    )


def sample(name: str, frames: int = 72, **extra) -> dict:
    kp = np.zeros((1, frames, 25, 3), np.float32)
    return {"frame_dir": name, "label": 0, "keypoint": kp, "total_frames": frames, **extra}


def test_extract_rgb_features_end_to_end(tmp_path):
    clip = shared_data("ntu", "videos", "ntu_sample.avi")
    root = tmp_path / "rgb"
    root.mkdir()
    (root / "S001C001P001R001A002_rgb.avi").write_bytes(b"\x00corrupt" * 64)
    anns = [
        sample("S001C001P001R001A001", rgb_path=str(clip)),  # absolute path in the sample
        sample("S001C001P001R001A002"),  # NTU naming, corrupt file
        sample("S001C001P001R001A003"),  # NTU naming, no file
        sample("S001C001P001R001A004", modalities=["skeleton"]),
    ]
    ann_file = save_annotations({"split": {"all": []}, "annotations": anns}, tmp_path / "a.pkl")
    out = tmp_path / "feats"
    kw = dict(arch="resnet18", pretrained=None, num_frames=4, size=64, batch_size=2, workers=1)
    torch.manual_seed(0)
    rep = extract_features(ann_file, "rgb", root, out, **kw)
    assert (rep["ok"], rep["error"], rep["missing"], rep["absent"]) == (1, 1, 1, 1)
    assert "S001C001P001R001A002_rgb.avi" in rep["failures"]["S001C001P001R001A002"]
    feats = load_features(out, "S001C001P001R001A001")
    assert feats.shape == (4, 512) and feats.dtype == np.float16
    torch.manual_seed(0)  # same random weights -> same features as encoding directly
    ref = FrameResNet("resnet18")(load_rgb_clip(clip, 4, size=64)[None])[0]
    assert np.allclose(feats.astype(np.float32), ref.numpy(), rtol=2e-3, atol=2e-3)
    index = json.loads((out / "index.json").read_text())
    assert (index["arch"], index["num_frames"], index["size"], index["feature_dim"]) == (
        "resnet18",
        4,
        64,
        512,
    )
    assert index["samples"]["S001C001P001R001A001"] == "ok"
    assert feature_dim(out) == 512  # what the training loader reads back
    mtime = (out / "S001C001P001R001A001.npy").stat().st_mtime_ns
    rep2 = extract_features(ann_file, "rgb", root, out, **kw)  # resumes: nothing re-encoded
    assert (rep2["ok"], rep2["cached"], rep2["error"]) == (0, 1, 1)
    assert (out / "S001C001P001R001A001.npy").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="other settings"):
        extract_features(ann_file, "rgb", root, out, **{**kw, "size": 32})

    # the source rewritten (its frames played backwards): encoded again, not kept as cached
    import cv2

    cap, frames = cv2.VideoCapture(str(clip)), []
    while (got := cap.read())[0]:
        frames.append(cv2.resize(got[1], (160, 90)))
    cap.release()
    moved = tmp_path / "moved.avi"
    writer = cv2.VideoWriter(str(moved), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 90))
    for img in frames[::-1]:
        writer.write(img)
    writer.release()
    anns[0]["rgb_path"] = str(moved)  # the sample's source is now another file
    save_annotations({"split": {"all": []}, "annotations": anns}, ann_file)
    torch.manual_seed(0)
    rep3 = extract_features(ann_file, "rgb", root, out, **kw)
    assert (rep3["ok"], rep3["cached"], rep3["renewed"]) == (1, 0, 1)
    again = load_features(out, "S001C001P001R001A001")
    assert np.abs(again.astype(np.float32) - feats.astype(np.float32)).max() > 0.01
    stamp = json.loads((out / "index.json").read_text())["sources"]["S001C001P001R001A001"]
    assert stamp == [moved.stat().st_size, moved.stat().st_mtime_ns]
    moved.write_bytes(b"\x00corrupt" * 64)  # rewritten and broken: no stale features stay
    rep4 = extract_features(ann_file, "rgb", root, out, **kw)
    assert (rep4["ok"], rep4["error"], rep4["renewed"]) == (0, 2, 1)
    assert not (out / "S001C001P001R001A001.npy").exists()


def test_extract_depth_features(tmp_path):
    write_depth_fixture(tmp_path / "S001C002P001R001A001", 10)
    data = {
        "split": {},
        "annotations": [sample("S001C002P001R001A001", 10, depth_xy=person_xy(10))],
    }
    torch.manual_seed(0)
    rep = extract_features(
        data,
        "depth",
        tmp_path,
        tmp_path / "f",
        "resnet18",
        None,
        num_frames=3,
        size=32,
        workers=0,
        depth_norm="fixed",
    )
    assert rep["ok"] == 1 and rep["feature_dim"] == 512
    torch.manual_seed(0)
    clip = load_depth_clip(tmp_path / "S001C002P001R001A001", 3, person_xy(10), 32)
    ref = FrameResNet("resnet18")(clip[None])[0].numpy()
    got = load_features(tmp_path / "f", "S001C002P001R001A001").astype(np.float32)
    assert got.shape == (3, 512) and np.allclose(got, ref, rtol=2e-3, atol=2e-3)
    with pytest.raises(FileNotFoundError, match="no features for S999"):
        load_features(tmp_path / "f", "S999")
