"""Your own RGB-D data: the per-sample keys that name a sample's video and depth sources
(an RGB video; a .mat of (H, W, T) or a folder of 16-bit PNGs), on real files: the NTU clip,
UTD-MHAD depth .mat files and PNG folders written from them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from skelact.data.formats.annotations import save_annotations
from skelact.data.media.depth import list_depth_frames, load_depth_clip, open_depth, read_depth_mat
from skelact.data.media.features import clip_features, crop_points, extract_features, frame_encoder
from skelact.data.media.paths import source_path
from skelact.data.media.video import crop_box, load_rgb_clip
from tests.conftest import shared_data

# training overrides of the tests that only need a model to exist
ONE_QUICK_EPOCH = (
    "trainer.epochs=1",
    "trainer.num_workers=0",
    "trainer.threads=1",
    "trainer.progress=false",
)
UTD = ("a1_s1_t1", "a1_s2_t1", "a1_s3_t1", "a2_s1_t1", "a2_s2_t1", "a2_s3_t1")


def utd_depth(name: str) -> Path:
    return shared_data("utd_mhad", "Depth", f"{name}_depth.mat")


def write_pngs(cube: np.ndarray, folder: Path, pattern: str = "frame_{}.png") -> Path:
    """(T, H, W) uint16 -> folder/frame_1.png ... (1-based, unpadded: natural order matters)."""
    folder.mkdir(parents=True)
    for t, mm in enumerate(cube):
        assert cv2.imwrite(str(folder / pattern.format(t + 1)), mm)
    return folder


def test_utd_mat_reads_as_frames_and_matches_a_png_folder(tmp_path):
    mat = utd_depth("a1_s1_t1")
    cube = read_depth_mat(mat)
    raw = scipy.io.loadmat(str(mat))["d_depth"]  # (240, 320, T) as published
    assert cube.shape == (raw.shape[2], 240, 320) and cube.dtype == np.uint16
    assert np.array_equal(cube[5], raw[:, :, 5])
    fg = (cube > 0).mean()
    assert 0.02 < fg < 0.2 and 500 < np.median(cube[cube > 0]) < 4000  # person, mm
    folder = write_pngs(cube, tmp_path / "png")
    files = list_depth_frames(folder)  # frame_2 before frame_10
    assert [p.name for p in files[:3]] == ["frame_1.png", "frame_2.png", "frame_3.png"]
    assert files[9].name == "frame_10.png" and len(files) == len(cube)
    count, read = open_depth(folder)
    assert count == len(cube) and np.array_equal(read(9), cube[9])
    # the same clip from either form, cropped around the foreground points of the sample
    ys, xs = np.nonzero(cube[0])
    xy = np.zeros((1, len(cube), 2, 2))
    xy[0, :, 0], xy[0, :, 1] = (xs.min(), ys.min()), (xs.max(), ys.max())
    a = load_depth_clip(mat, 8, xy=xy, size=96)
    b = load_depth_clip(folder, 8, xy=xy, size=96)
    assert a.shape == (8, 1, 96, 96) and torch.equal(a, b)
    # cropped around the person: 12.9 % foreground where the whole 320x240 frame has 8.0 %
    assert (a > 0).float().mean() > 1.4 * (cube > 0).mean()


def test_depth_source_errors_name_the_file(tmp_path):
    bad = tmp_path / "two.mat"
    scipy.io.savemat(str(bad), {"a": np.zeros((4, 4, 2)), "b": np.zeros((4, 4, 3))})
    with pytest.raises(OSError, match=r"two\.mat: .*one"):  # which array is the depth?
        open_depth(bad)
    (tmp_path / "junk.mat").write_bytes(b"not matlab")
    with pytest.raises(OSError, match=r"junk\.mat: not a readable"):
        open_depth(tmp_path / "junk.mat")
    with pytest.raises(FileNotFoundError, match=r"gone\.mat does not exist"):
        open_depth(tmp_path / "gone.mat")
    # no frame (numpy's "zero-size array to reduction operation" named no file); metres in
    # floats (cast to 0-4 mm, silently); whole millimetres in doubles (MATLAB's default) read
    scipy.io.savemat(str(bad), {"d_depth": np.zeros((240, 320, 0), np.uint16)})
    with pytest.raises(OSError, match=r"two\.mat: holds no frame \(shape \(240, 320, 0\)\)"):
        open_depth(bad)
    metres = np.full((4, 4, 2), 1.25)
    scipy.io.savemat(str(bad), {"d_depth": metres})
    with pytest.raises(OSError, match=r"two\.mat: values of float64 that are not whole mill"):
        open_depth(bad)
    scipy.io.savemat(str(bad), {"d_depth": metres * 1000})
    count, read = open_depth(bad)
    assert count == 2 and read(1).dtype == np.uint16 and (read(1) == 1250).all()


def test_source_keys_and_name_fallbacks(tmp_path):
    for rel in ("walk/c1.mp4", "S001_rgb.avi", "d1/MDepth-00000001.png", "d2.mat"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    s = {"frame_dir": "x", "rgb_path": "cam/x.mkv", "depth_path": "/abs/x.mat"}
    assert source_path(s, "rgb", tmp_path) == tmp_path / "cam/x.mkv"
    assert source_path(s, "depth", tmp_path) == Path("/abs/x.mat")  # absolute stays absolute
    # without keys: NTU names, then the path under the folder given to `skelact convert`
    assert source_path({"frame_dir": "S001"}, "rgb", tmp_path) == tmp_path / "S001_rgb.avi"
    assert source_path({"frame_dir": "walk/c1"}, "rgb", tmp_path) == tmp_path / "walk/c1.mp4"
    assert source_path({"frame_dir": "d1"}, "depth", tmp_path) == tmp_path / "d1"
    assert source_path({"frame_dir": "d2"}, "depth", tmp_path) == tmp_path / "d2.mat"


def test_crop_points_from_joints_or_boxes():
    box = np.zeros((2, 3, 4), np.float32)
    box[0] = (100, 50, 300, 450)  # person 0: 200 x 400 px in every frame
    box[1, 1] = (900, 100, 1000, 200)  # person 1 in frame 1 only
    pts = crop_points({"color_box": box}, "rgb")
    assert pts.shape == (2, 3, 2, 2)
    # frames 0 and 2: person 1 absent (zeros ignored); the square side 400 * 1.3 = 520
    assert crop_box(pts, [0, 2], 1920, 1080) == (0, 0, 520, 520)  # centre (200, 250), clipped
    x0, y0, x1, y1 = crop_box(pts, [1], 1920, 1080)  # both people: x 100-1000
    assert x0 <= 100 and x1 >= 1000 and y1 - y0 == x1 - x0
    xy = np.ones((1, 3, 25, 2))
    assert np.array_equal(crop_points({"color_xy": xy, "color_box": box}, "rgb"), xy)  # joints win
    assert crop_points({"frame_dir": "a"}, "depth") is None
    # a store converted before boxes were kept: its normalised landmarks, in pixels
    old = {"keypoint_2d": np.full((1, 3, 33, 2), 0.5, np.float32), "img_shape": (1080, 1920)}
    assert np.array_equal(crop_points(old, "rgb")[0, 0, 0], [960, 540])
    with pytest.raises(ValueError, match="a: depth_box must be"):
        crop_points({"frame_dir": "a", "depth_box": np.zeros((3, 4))}, "depth")


@pytest.fixture(scope="module")
def rgbd_set(tmp_path_factory):
    """Six real UTD-MHAD samples (skeleton + depth, 2 actions, 3 subjects) named through the
    documented keys: depth as the published .mat (relative path) or a PNG folder written from
    it, and an RGB video (cuts of the real NTU clip: UTD-MHAD's RGB is not here)."""
    root = tmp_path_factory.mktemp("rgbd")
    src = cv2.VideoCapture(str(shared_data("ntu", "videos", "ntu_sample.avi")))
    frames = [cv2.resize(src.read()[1], (320, 180)) for _ in range(40)]
    src.release()
    anns = []
    for k, name in enumerate(UTD):
        skel = scipy.io.loadmat(str(shared_data("utd_mhad", "Skeleton", f"{name}_skeleton.mat")))
        kp = skel["d_skel"].transpose(2, 0, 1)[None].astype(np.float32)  # (1, T, 20, 3)
        mat = utd_depth(name)
        if k % 2:  # every other sample: its depth as a folder of 16-bit PNGs
            depth = write_pngs(read_depth_mat(mat), root / "depth" / name, "d{:03d}.png")
            depth_path = depth.relative_to(root).as_posix()
        else:
            depth_path = str(mat)  # absolute
        video = root / "rgb" / f"{name}.avi"
        video.parent.mkdir(exist_ok=True)
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 180))
        for f in frames[k * 4 : k * 4 + 16]:
            writer.write(f)
        writer.release()
        anns.append(
            {
                "frame_dir": name,
                "label": int(name[1]) - 1,
                "keypoint": kp,
                "total_frames": kp.shape[1],
                "rgb_path": f"rgb/{name}.avi",
                "depth_path": depth_path,
            }
        )
    split = {"train": [a for a in UTD if "_s2_" not in a], "test": [a for a in UTD if "_s2_" in a]}
    data = {"split": split, "annotations": anns, "classes": ["swipe left", "swipe right"]}
    data["layout"] = "kinect20"
    return root, save_annotations(data, root / "rgbd.store")


def test_own_rgbd_recordings_train_with_every_stream(rgbd_set, tmp_path):
    from skelact.config import compose_config
    from skelact.train import train

    root, ann = rgbd_set
    kw = dict(pretrained=None, num_frames=4, size=64, workers=0)
    feats = {m: tmp_path / m for m in ("rgb", "depth")}
    for m, out in feats.items():
        rep = extract_features(ann, m, root, out, **kw)
        assert (rep["ok"], rep["total"]) == (6, 6), rep["failures"]
    # the .mat and PNG forms of the same depth encode alike; the crop is a centre crop here
    settings = json.loads((feats["depth"] / "index.json").read_text())
    enc = frame_encoder(settings)
    png = root / "depth" / UTD[1]
    ref = np.load(feats["depth"] / f"{UTD[1]}.npy")
    assert np.array_equal(clip_features(png, None, settings, enc), ref)
    assert np.array_equal(clip_features(utd_depth(UTD[1]), None, settings, enc), ref)
    rgb = load_rgb_clip(root / "rgb" / f"{UTD[0]}.avi", 4, size=64)
    assert rgb.shape == (4, 3, 64, 64)
    cfg = compose_config(
        [
            "modality=rgb_skeleton_depth",
            "model=bilstm",
            f"data.ann_file={ann}",
            f"data.rgb.features={feats['rgb']}",
            f"data.depth.features={feats['depth']}",
            "data.rgb.num_frames=4",
            "data.depth.num_frames=4",
            *ONE_QUICK_EPOCH,
        ]
    )
    train(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_samples"] == 2  # every test sample kept: no stream lacked its input
    kinds = ("joint", "bone", "jmotion", "bmotion", "dist")  # the default's five
    streams = {"rgb", "depth", *(f"skeleton_{k}" for k in kinds)}
    assert set(metrics["streams"]) == streams
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert set(ck["specs"]) == streams
    assert ck["specs"]["depth"]["extractor"]["modality"] == "depth"


def test_pixels_cache_is_the_crop_averaged_and_trains_a_depth_cnn(rgbd_set, tmp_path):
    """`prepare features --arch pixels`: the depth crop itself at grid x grid (no network,
    no weights, no random-weights warning); a model on it trains a PixelCNN per frame, and a
    new clip's features computed on the fly equal the cache."""
    from skelact.config import compose_config
    from skelact.models.encoders import PixelCNN
    from skelact.train import train

    root, ann = rgbd_set
    out = tmp_path / "pix"
    rep = extract_features(ann, "depth", root, out, "pixels", "imagenet", 4, 64, workers=0, grid=16)
    assert (rep["ok"], rep["feature_dim"]) == (6, 256), rep["failures"]
    settings = json.loads((out / "index.json").read_text())
    assert (settings["arch"], settings["pretrained"], settings["grid"]) == ("pixels", None, 16)
    for grid in (0, 65):  # 0 became the default (64) silently; the crop is 64 pixels a side
        with pytest.raises(ValueError, match=f"grid {grid}: give 1 to 64 \\(pixels at size 64"):
            extract_features(ann, "depth", root, out, "pixels", None, 4, 64, workers=0, grid=grid)
    with pytest.raises(ValueError, match=r"grid 8: give 1 to 7 \(resnet18 at size 224 has a fea"):
        extract_features(ann, "depth", root, tmp_path / "r", "resnet18", None, 4, 224, grid=8)
    clip = load_depth_clip(utd_depth(UTD[0]), 4, None, 64, norm="person")[:, 0].numpy()
    cells = clip.reshape(4, 16, 4, 16, 4).mean((2, 4)).reshape(4, 256)  # 4x4 pixel blocks
    cached = np.load(out / f"{UTD[0]}.npy").astype(np.float32)
    assert np.abs(cached - cells).max() < 2e-3 and cells.max() > 0.3  # a person, not zeros
    enc = frame_encoder(settings)
    assert np.array_equal(
        clip_features(utd_depth(UTD[0]), None, settings, enc), cached.astype(np.float16)
    )
    cfg = compose_config(
        [
            "modality=skeleton_depth",
            "model.fusion_weights=equal",
            f"data.ann_file={ann}",
            f"data.depth.features={out}",
            "data.depth.num_frames=4",
            *ONE_QUICK_EPOCH,
        ]
    )
    train(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["features"]["depth"]["arch"] == "pixels"
    assert "warning" not in metrics["features"]["depth"]  # weightless, not random
    # equal weights are recorded as such (there was no "fusion" entry)
    assert metrics["fusion"] == {"weights": {"skeleton": 0.5, "depth": 0.5}, "chosen": "equal"}
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    convs = [k for k in ck["model"] if k.startswith("streams.depth.encoder.0.net.")]
    assert convs, "the depth stream has no PixelCNN"
    from skelact.models.recognizer import build_recognizer

    net = build_recognizer(cfg.model, ["depth"], 2, {"depth": ck["specs"]["depth"]})
    assert isinstance(net.streams["depth"].encoder[0], PixelCNN)
    # the Python API and its ONNX export give the same probabilities (the CNN exports too)
    import skelact
    from skelact.data.formats.annotations import load_annotations
    from skelact.export import export_onnx

    sample = next(a for a in load_annotations(ann)["annotations"] if a["frame_dir"] == UTD[0])
    feats = {"depth": cached}
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    a = skelact.load(ckpt).predict(dict(sample), features=feats)
    b = skelact.load(export_onnx(ckpt, tmp_path / "m.onnx")).predict(dict(sample), features=feats)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)


def test_fusion_weights_fit_on_folds_score_every_training_sample(rgbd_set, tmp_path):
    """model.fusion_folds=2: two development runs, each holding out half of the training
    split (these samples name no subject: one of each class), every training sample scored
    once; the weights fit on those scores are the ones the fused model carries."""
    from skelact.config import compose_config
    from skelact.data.formats.annotations import load_annotations
    from skelact.fusion import read_stream_scores
    from skelact.train import train

    root, ann = rgbd_set
    out = tmp_path / "pix"
    rep = extract_features(ann, "depth", root, out, "pixels", "imagenet", 4, 64, workers=0, grid=16)
    assert rep["ok"] == 6, rep["failures"]
    over = [f"data.ann_file={ann}", f"data.depth.features={out}", "data.depth.num_frames=4"]
    cfg = compose_config(["modality=skeleton_depth", "model.fusion_folds=2", *over,
                          *ONE_QUICK_EPOCH])  # fmt: skip
    run = tmp_path / "run"
    train(cfg, run)
    labels = []
    for k in (0, 1):
        scores, lab = read_stream_scores(run / "fusion_fit" / f"fold{k}")
        assert sorted(lab.tolist()) == [0, 1] and set(scores) == set(cfg.modality.streams)
        labels += lab.tolist()
    train_labels = [a["label"] for a in load_annotations(ann)["annotations"]
                    if "_s2_" not in a["frame_dir"]]  # fmt: skip
    assert sorted(labels) == sorted(train_labels)
    fusion = json.loads((run / "metrics.json").read_text())["fusion"]
    assert (fusion["folds"], fusion["dev_samples"]) == (2, 4)
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    weights = [fusion["weights"][g] for g in ("skeleton", "depth")]
    assert torch.allclose(ck["model"]["group_weights"], torch.tensor(weights))


def test_pixel_cnn_shapes_shift_and_choice():
    from omegaconf import OmegaConf

    from skelact.models.encoders import PixelCNN, build_encoder

    torch.manual_seed(0)
    net = PixelCNN(1, 48)
    x = torch.rand(2, 5, 48 * 48)
    net.eval()
    y = net(x)
    assert y.shape == (2, 5, net.out_dim) and net.out_dim == 64 * 3 * 3
    assert torch.equal(y, net(x))  # no shift when evaluating
    moved = torch.roll(x.reshape(2, 5, 48, 48), 8, dims=-1).reshape(2, 5, -1)
    assert not torch.allclose(net(moved), y)  # where things are in the frame counts
    with pytest.raises(ValueError, match="1 x 48 x 48 = 2304 features, got 256"):
        net(torch.rand(2, 5, 256))
    cfg = OmegaConf.create(
        {"input": "features", "encoder": "auto", "embed": 8, "dropout": 0.0, "motion": True}
    )
    pix = {"feature_dim": 2304, "extractor": {"arch": "pixels", "grid": 48}}
    eff = {"feature_dim": 1280, "extractor": {"arch": "efficientnet_lite0", "grid": 1}}
    assert isinstance(build_encoder("depth", cfg, pix)[0][0], PixelCNN)
    assert not any(isinstance(m, PixelCNN) for m in build_encoder("depth", cfg, eff)[0].modules())
    cfg.encoder = "cnn"
    with pytest.raises(ValueError, match="--arch pixels.*efficientnet_lite0"):
        build_encoder("depth", cfg, eff)
