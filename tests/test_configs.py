"""Every model x modality config composes, builds, and takes one training step."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from skelact.config import CONFIG_DIR, check_settings, compose_config
from skelact.data.formats.annotations import save_annotations
from skelact.data.run import Data, make_loader
from skelact.engine import split_batch
from skelact.losses import stream_loss
from skelact.models.recognizer import build_recognizer
from tests.conftest import assert_training_step, toy_annotations

MODELS = sorted(p.stem for p in Path(CONFIG_DIR, "model").glob("*.yaml"))
MODALITIES = sorted(p.stem for p in Path(CONFIG_DIR, "modality").glob("*.yaml"))
DATASETS = sorted(
    p.stem for p in Path(CONFIG_DIR, "data").glob("*.yaml") if not p.stem.startswith("_")
)


@pytest.fixture(scope="module")
def toy_with_features(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    data = toy_annotations(num_classes=3, per_class=4, frames=20)
    for kind, dim in (("rgb", 24), ("depth", 16)):
        (root / kind).mkdir()
        for ann in data["annotations"]:
            feats = np.random.default_rng(0).normal(size=(20, dim)).astype(np.float16)
            np.save(root / kind / f"{ann['frame_dir']}.npy", feats)
    save_annotations(data, root / "toy.pkl")
    return root


def model_and_batch(cfg):
    """The run's Data, a freshly built model and one training batch."""
    data = Data(cfg)
    dataset, specs = data.dataset(cfg.data, "train", train=True)
    net = build_recognizer(cfg.model, data.streams, data.num_classes, specs)
    return data, net, next(iter(make_loader(dataset, cfg.trainer, shuffle=True)))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("modality", MODALITIES)
def test_one_training_step(model, modality, toy_with_features):
    root = toy_with_features
    cfg = compose_config(
        [
            f"model={model}",
            f"modality={modality}",
            f"data.ann_file={root / 'toy.pkl'}",
            "data.train_split=train",
            "data.test_split=test",
            f"data.rgb.features={root / 'rgb'}",
            f"data.depth.features={root / 'depth'}",
            "data.skeleton.clip_len=8",
            "data.rgb.num_frames=6",
            "data.depth.num_frames=6",
            "trainer.batch_size=4",
            "trainer.num_workers=0",
        ]
    )
    data, net, batch = model_and_batch(cfg)
    inputs, labels, _ = split_batch(batch, data.streams, "cpu")
    out = net(inputs)
    assert out["logits"].shape == (4, 3)
    assert set(out["attention"]) == set(cfg.modality.streams)
    for _name, att in out["attention"].items():
        torch.testing.assert_close(att.sum(1), torch.ones(4))  # softmax over time
    # concat fusion leaves each stream head unused only when aux loss is off; it is 0.5 here
    assert_training_step(net, out, labels)


@pytest.mark.parametrize("dataset", DATASETS)
def test_data_configs_need_only_the_annotation_file(dataset):
    cfg = compose_config([f"data={dataset}", "data.ann_file=x.pkl"])
    # a named dataset knows its splits; the generic one takes those `skelact convert` writes
    assert set(OmegaConf.missing_keys(cfg)) == set()
    if dataset == "annotations":
        assert (cfg.data.train_split, cfg.data.test_split) == ("train", "test")


def test_end_to_end_frames_input_trains_the_resnets(tmp_path):
    """model.<stream>.input=frames: pixels -> trainable ResNet -> core, one step."""
    import cv2

    from tests.test_video_depth import write_depth_fixture

    data = toy_annotations(num_classes=2, per_class=4, frames=12)
    for ann in data["annotations"]:
        name = ann["frame_dir"]
        writer = cv2.VideoWriter(
            str(tmp_path / f"{name}_rgb.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (96, 64)
        )
        for t in range(12):
            writer.write(np.full((64, 96, 3), 10 * t + 80 * ann["label"], np.uint8))
        writer.release()
        write_depth_fixture(tmp_path / name, 12)
    save_annotations(data, tmp_path / "toy.pkl")
    frames = [
        f"model.{s}.{k}"
        for s in ("rgb", "depth")
        for k in ("input=frames", "arch=resnet18", "pretrained=null", "frozen=false")
    ]
    cfg = compose_config(
        [
            "modality=rgb_skeleton_depth",
            f"data.ann_file={tmp_path / 'toy.pkl'}",
            "data.train_split=train",
            "data.test_split=test",
            *frames,
            f"data.rgb.root={tmp_path}",
            f"data.depth.root={tmp_path}",
            "data.rgb.size=32",
            "data.depth.size=32",
            "data.rgb.num_frames=4",
            "data.depth.num_frames=4",
            "trainer.batch_size=2",
            "trainer.num_workers=0",
        ]
    )
    d, net, batch = model_and_batch(cfg)
    assert batch["rgb"].shape == (2, 1, 4, 3, 32, 32)
    assert batch["depth"].shape == (2, 1, 4, 1, 32, 32)
    inputs, labels, _ = split_batch(batch, d.streams, "cpu")
    stream_loss(net(inputs), labels, 0.0, 0.5).backward()
    for s in ("rgb", "depth"):
        conv1 = net.streams[s].encoder[0].backbone.conv1.weight
        assert conv1.grad is not None and conv1.grad.abs().sum() > 0


def test_streams_with_different_test_clip_counts_are_fused_clip_by_clip():
    batch = {
        "skeleton": torch.randn(3, 5, 2, 8, 25, 9),
        "rgb": torch.randn(3, 1, 6, 24),
        "label": torch.tensor([0, 1, 2]),
    }
    inputs, labels, k = split_batch(batch, ["rgb", "skeleton"], "cpu")
    assert k == 5 and inputs["skeleton"].shape[0] == 15 and inputs["rgb"].shape[0] == 3
    cfg = compose_config(["modality=rgb_skeleton", "model=bilstm", "data.ann_file=x.pkl"])
    specs = {
        "skeleton": {"num_joints": 25, "channels": 9, "num_bodies": 2},
        "rgb": {"feature_dim": 24},
    }
    model = build_recognizer(cfg.model, ["rgb", "skeleton"], 4, specs).eval()
    with torch.no_grad():  # the RGB clip encoded once equals it repeated for every clip
        once = model(inputs)
        repeated = model({**inputs, "rgb": batch["rgb"].expand(-1, 5, -1, -1).flatten(0, 1)})
    assert once["logits"].shape == (15, 4)
    torch.testing.assert_close(once["logits"], repeated["logits"])
    torch.testing.assert_close(once["streams"]["rgb"][5:10], repeated["streams"]["rgb"][5:10])


def test_sample_without_a_modality_is_named_once_and_left_out(toy_with_features, tmp_path, caplog):
    root = toy_with_features
    feats = tmp_path / "rgb"
    feats.mkdir()
    first = "toy_c0_001"  # a training sample without RGB
    for f in (root / "rgb").glob("*.npy"):
        if f.stem != first:
            (feats / f.name).symlink_to(f)
    cfg = compose_config(
        [
            "modality=rgb_skeleton",
            f"data.ann_file={root / 'toy.pkl'}",
            "data.train_split=train",
            "data.test_split=test",
            f"data.rgb.features={feats}",
        ]
    )
    data = Data(cfg)
    with caplog.at_level("WARNING", logger="skelact"):
        dataset, _ = data.dataset(cfg.data, "train", train=True)
    assert first not in [s["frame_dir"] for s in dataset.samples]
    assert len(dataset) == len(data.store.split("train")) - 1
    warnings = [r.getMessage() for r in caplog.records if first in r.getMessage()]
    assert len(warnings) == 1 and "no rgb input" in warnings[0]
    assert data.left_out["train"] == {"rgb": 1}  # metrics.json's "left_out" for a test split
    # a cache whose index.json says the file was written: damaged, not "no input"
    from skelact.data.media.features import _write_index

    dim = np.load(next(feats.glob("*.npy"))).shape[-1]
    _write_index(feats, {"modality": "rgb", "feature_dim": dim}, {first: "ok"})
    with pytest.raises(FileNotFoundError, match=f"{feats} is damaged: its index.json lists "
                       f"{first} as written but {first}.npy is missing"):  # fmt: skip
        Data(cfg).dataset(cfg.data, "train", train=True)


def test_a_cache_without_any_sample_of_the_split_is_refused(toy_with_features, tmp_path):
    feats = tmp_path / "rgb"
    feats.mkdir()
    # features of another data set only: none of this one's samples is in the cache
    (feats / "elsewhere.npy").symlink_to(next((toy_with_features / "rgb").glob("*.npy")))
    cfg = compose_config(
        [
            "modality=rgb_skeleton",
            f"data.ann_file={toy_with_features / 'toy.pkl'}",
            "data.train_split=train",
            "data.test_split=test",
            f"data.rgb.features={feats}",
        ]
    )
    n = len(Data(cfg).store.split("train"))
    with pytest.raises(SystemExit, match=f"train: none of its {n} sample.s. has a rgb input"):
        Data(cfg).dataset(cfg.data, "train", train=True)


def test_a_cache_of_the_other_modality_is_named(toy_with_features, tmp_path):
    feats = tmp_path / "rgb"
    feats.mkdir()
    for f in (toy_with_features / "rgb").glob("*.npy"):
        (feats / f.name).symlink_to(f)
    (feats / "index.json").write_text('{"modality": "rgb", "feature_dim": 24}')
    cfg = compose_config(
        [
            "modality=skeleton_depth",
            f"data.ann_file={toy_with_features / 'toy.pkl'}",
            "data.train_split=train",
            "data.test_split=test",
            f"data.depth.features={feats}",
        ]
    )
    with pytest.raises(ValueError, match=r"holds rgb features \(its index.json\), not depth"):
        Data(cfg).dataset(cfg.data, "train", train=True)


@pytest.mark.parametrize("dataset", DATASETS)
def test_shipped_configs_pass_the_number_check(dataset):
    check_settings(compose_config([f"data={dataset}", "data.ann_file=x.pkl"]))


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.epochs=two", "trainer.epochs must be an integer >= 0, got 'two'"),
        ("trainer.epochs=2.5", "trainer.epochs must be an integer >= 0, got 2.5"),
        ("trainer.lr=abc", "trainer.lr must be a number > 0, got 'abc'"),
        ("trainer.lr=0", "trainer.lr must be a number > 0, got 0"),
        ("seed=abc", "seed must be an integer >= 0"),
        ("data.skeleton.clip_len=0", "data.skeleton.clip_len must be an integer >= 1, got 0"),
        ("data.skeleton.num_bodies=0", "num_bodies must be an integer >= 1, got 0"),
        ("trainer.label_smoothing=1.5", "label_smoothing must be a number >= 0 and <= 1"),
        ("trainer.batch_size=true", "batch_size must be an integer >= 1, got True"),
        ("trainer.resume=flase", "trainer.resume must be true or false, got 'flase'"),
        ("data.skeleton.center=1", "data.skeleton.center must be true or false, got 1"),
        ("trainer.ema_epochs=-1", "trainer.ema_epochs must be a number >= 0, got -1"),
        ("trainer.min_lr_ratio=2", "trainer.min_lr_ratio must be a number >= 0 and <= 1, got 2"),
        ("model.fusion_weights=Fit", "model.fusion_weights must be one of fit, equal, got 'Fit'"),
        ("model.skeleton.encoder=gnc", "model.skeleton.encoder must be one of mlp, gcn, got"),
        ("trainer.precision=fp16", "trainer.precision must be one of auto, fp32, bf16, got"),
        ("trainer.distill.online=flase", "trainer.distill.online must be true or false"),
        ("model.core.bidirectional=flase", "model.core.bidirectional must be true or false"),
        ("model.core.shared=no", "model.core.shared must be true or false, got 'no'"),
        ("trainer.distill.weight=1.5", "trainer.distill.weight must be a number >= 0 and <= 1"),
        ("trainer.distill.temperature=0", "trainer.distill.temperature must be a number > 0"),
        ("trainer.consistency=-4", "trainer.consistency must be a number >= 0, got -4"),
        ("trainer.threads=0", "trainer.threads must be auto or an integer >= 1, got 0"),
        ("trainer.threads=abc", "trainer.threads must be auto or an integer >= 1, got 'abc'"),
        ("trainer.threads=true", "trainer.threads must be auto or an integer >= 1, got True"),
    ],
)
def test_mistyped_numbers_are_refused_by_key(override, message):
    cfg = compose_config(["data=utdmhad_xsub", "data.ann_file=x.pkl", override])
    with pytest.raises(ValueError, match=re.escape(message)):
        check_settings(cfg)


def test_joint_mlp_input_norm_normalises_each_channel():
    from skelact.models.encoders import JointMLP

    torch.manual_seed(0)
    enc = JointMLP(20, 9, 1, hidden=16, out_dim=8, input_norm=True)
    x = torch.randn(4, 1, 6, 20, 9) * torch.linspace(0.1, 10, 9)  # channels of unequal scale
    assert enc(x).shape == (4, 6, 8)
    normed = enc.input_norm(x.reshape(-1, 180))
    # BatchNorm's eps (1e-5) pulls the std of the 0.1-scale channels slightly below 1
    torch.testing.assert_close(normed.std(0, unbiased=False), torch.ones(180), atol=5e-3, rtol=0)
    torch.testing.assert_close(normed.mean(0), torch.zeros(180), atol=1e-5, rtol=0)


def test_depth_frames_grid_is_the_cache_default():
    """A depth stream trained on frames (model.depth.input=frames) crops at the grid that
    `prepare features` caches by default: the two are kept apart on purpose (a checkpoint
    rebuilds its model from its own config, so the yaml must hold a number), so they must
    agree. Both moved from 48 to 64 on 2026-12-07."""
    from skelact.data.media.features import PIXELS_GRID

    cfg = compose_config(["data=ntu60_xsub", "data.ann_file=none"])
    assert cfg.model.depth.arch == "pixels"
    assert cfg.model.depth.grid == PIXELS_GRID == 64


def test_a_device_torch_does_not_know_or_this_machine_lacks_is_named():
    """trainer.device=gpu printed torch's list of every device type; cuda on a machine
    without a GPU, the driver's message."""
    import torch

    from skelact.runtime import pick_device

    with pytest.raises(ValueError, match=r"^trainer.device=gpu is not a device: auto, cpu, cuda"):
        pick_device("gpu")
    if torch.cuda.device_count() < 8:
        with pytest.raises(ValueError, match=r"^trainer.device=cuda:7: torch sees .* here; use"):
            pick_device("cuda:7")
    assert pick_device("cpu") == torch.device("cpu")


def test_options_that_do_nothing_here_are_named(caplog):
    """trainer.mutual without an ensemble and model.modality_dropout with one modality trained
    exactly as without them, without a word."""
    from skelact.train import _check_options

    base = ["data=utdmhad_xsub", "data.ann_file=x"]
    cases = [
        (["model.fusion=concat", "trainer.mutual=1.0"], "trainer.mutual=1.0 has no effect with "
         "model.fusion=concat"),
        (["model.fusion=concat", "model.modality_dropout=0.5"], "model.modality_dropout=0.5 has "
         "no effect: it drops whole modalities"),
        (["trainer.consistency=0.5"], "trainer.consistency needs trainer.views > 1"),
    ]  # fmt: skip
    for overrides, words in cases:
        caplog.clear()
        with caplog.at_level("WARNING", logger="skelact"):
            _check_options(compose_config([*base, *overrides]), 1)
        assert words in caplog.text, overrides
    caplog.clear()
    with caplog.at_level("WARNING", logger="skelact"):
        _check_options(compose_config([*base, "trainer.mutual=1.0"]), 1)  # the default: ensemble
    assert caplog.text == ""
