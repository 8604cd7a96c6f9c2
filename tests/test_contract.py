"""A checkpoint's contract at evaluation, and degenerate inputs refused up front: empty or
overlapping splits, clips without frames, top-5 with few classes, failed checkpoint saves."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from skelact.checkpoints import save_checkpoint
from skelact.config import compose_config
from skelact.data.formats.annotations import save_annotations
from skelact.data.formats.schema import AnnotationError, validate
from skelact.engine import write_eval_outputs
from skelact.evaluate import evaluate_checkpoint
from skelact.metrics import summarize
from skelact.train import train
from tests.conftest import toy_annotations
from tests.test_train import FAST, SPLITS


@pytest.fixture(scope="module")
def one_body_run(tmp_path_factory):
    """A 6-class single-body model and the data it was trained on."""
    root = tmp_path_factory.mktemp("contract")
    data = toy_annotations(num_classes=6, per_class=16, frames=30)
    path = save_annotations(data, root / "toy.pkl")
    cfg = compose_config([f"data.ann_file={path}", *SPLITS, *FAST, "trainer.epochs=8"])
    metrics = train(cfg, root / "run")
    return {"data": data, "root": root, "ckpt": root / "run/checkpoints/last.pt", "m": metrics}


def evaluate(run, data: dict, name: str, *extra: str) -> dict:
    path = save_annotations(data, run["root"] / f"{name}.pkl")
    out = run["root"] / f"eval_{name}"
    return evaluate_checkpoint(
        [f"ckpt={run['ckpt']}", f"out_dir={out}", f"data.ann_file={path}", *extra]
    )


def test_two_body_file_conforms_to_a_one_body_model(one_body_run):
    data = copy.deepcopy(one_body_run["data"])
    for ann in data["annotations"]:  # a second, calmer person beside every actor
        partner = ann["keypoint"][:1] * 0.5 + np.float32(1.0)
        ann["keypoint"] = np.concatenate([ann["keypoint"], partner])
    metrics = evaluate(one_body_run, data, "two_bodies")
    assert metrics["top1"] == pytest.approx(one_body_run["m"]["top1"])  # body 0 is used


def test_checkpoint_classes_name_the_predictions(one_body_run):
    """A file whose class table is in another order: labels are matched by name."""
    data = copy.deepcopy(one_body_run["data"])
    order = [3, 0, 5, 1, 4, 2]  # new label of each old class
    data["classes"] = [None] * 6
    for old, new in enumerate(order):
        data["classes"][new] = one_body_run["data"]["classes"][old]
    for ann in data["annotations"]:
        ann["label"] = order[ann["label"]]
    metrics = evaluate(one_body_run, data, "reordered")
    assert metrics["top1"] == pytest.approx(one_body_run["m"]["top1"])
    preds = pd.read_csv(one_body_run["root"] / "eval_reordered/predictions.csv")
    truth = {a["frame_dir"]: one_body_run["data"]["classes"][order.index(a["label"])]
             for a in data["annotations"]}  # fmt: skip
    assert all(preds["label_name"] == preds["frame_dir"].map(truth))


def test_unknown_classes_and_labels_are_refused(one_body_run):
    data = copy.deepcopy(one_body_run["data"])
    data["classes"] = data["classes"][:5] + ["juggling"]
    with pytest.raises(SystemExit, match="'juggling'"):
        evaluate(one_body_run, data, "unknown_class")
    data = copy.deepcopy(one_body_run["data"])
    del data["classes"]
    data["annotations"][-1]["label"] = 9
    data["split"]["test"].append(data["annotations"][-1]["frame_dir"])
    with pytest.raises(SystemExit, match="label 9.*6 classes"):
        evaluate(one_body_run, data, "label_out_of_range")


def test_layout_and_preprocessing_mismatches_are_refused(one_body_run):
    data = copy.deepcopy(one_body_run["data"])
    data["layout"] = "ntu25"  # the model was trained on generic 25-joint data
    with pytest.raises(SystemExit, match="ntu25"):
        evaluate(one_body_run, data, "other_layout")
    with pytest.raises(SystemExit, match="clip_len"):
        evaluate(one_body_run, one_body_run["data"], "clip", "data.skeleton.clip_len=8")


@pytest.mark.parametrize("role", ["train", "test"])
def test_empty_split_is_refused_before_training(tmp_path, role):
    data = toy_annotations(num_classes=3, per_class=8, frames=20)
    data["split"][role] = []
    path = save_annotations(data, tmp_path / "toy.pkl")
    cfg = compose_config([f"data.ann_file={path}", *SPLITS, *FAST, "trainer.epochs=1"])
    with pytest.raises(SystemExit, match=f"data.{role}_split={role} is empty"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run/checkpoints").exists()


@pytest.mark.parametrize("role", ["train", "test"])
def test_a_label_beyond_data_num_classes_is_refused_before_training(tmp_path, role):
    """data.num_classes below a file's labels: an IndexError in the first step (a training
    sample) or after every epoch, at the evaluation (a test sample), no metrics written."""
    data = toy_annotations(num_classes=3, per_class=8, frames=20)
    data.pop("classes", None)
    name = data["split"][role][1]
    next(a for a in data["annotations"] if a["frame_dir"] == name)["label"] = 5
    path = save_annotations(data, tmp_path / "toy.pkl")
    cfg = compose_config([f"data.ann_file={path}", *SPLITS, *FAST, "trainer.epochs=1",
                          "data.num_classes=3"])  # fmt: skip
    with pytest.raises(SystemExit, match=(
        rf"sample {name} of data.{role}_split={role} has label 5, but the model has 3 classes "
        r"\(labels 0-2\); set data.num_classes to at least 6"
    )):  # fmt: skip
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_val_split_inside_train_split_is_refused_unless_allowed(tmp_path):
    data = toy_annotations(num_classes=3, per_class=8, frames=20)
    data["split"]["val"] = data["split"]["train"][:4]
    path = save_annotations(data, tmp_path / "toy.pkl")
    args = [f"data.ann_file={path}", *SPLITS, *FAST, "trainer.epochs=1", "data.val_split=val"]
    with pytest.raises(SystemExit, match="4 sample.*also in data.train_split"):
        train(compose_config(args), tmp_path / "a")
    metrics = train(compose_config([*args, "data.allow_val_overlap=true"]), tmp_path / "b")
    assert metrics["num_samples"] == len(data["split"]["test"])


def test_sample_without_frames_fails_validation():
    data = toy_annotations(num_classes=2, per_class=2, frames=10)
    data["annotations"][1]["keypoint"] = np.zeros((1, 0, 25, 3), np.float32)
    data["annotations"][1]["total_frames"] = 0
    with pytest.raises(AnnotationError, match="toy_c0_001.*no frames"):
        validate(data, "few.pkl")


def test_top5_is_null_with_five_classes_or_fewer(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 50)
    assert summarize(rng.random((50, 5)), labels)["top5"] is None
    scores = rng.random((50, 7))
    top5 = summarize(scores, labels)["top5"]
    expected = np.mean([lab in np.argsort(-s)[:5] for s, lab in zip(scores, labels, strict=True)])
    assert top5 == pytest.approx(expected) and top5 < 1.0
    json.dumps(summarize(rng.random((50, 5)), labels))  # null in metrics.json


def test_failed_checkpoint_save_leaves_nothing_behind(tmp_path):
    good = tmp_path / "last.pt"
    save_checkpoint({"w": torch.ones(2)}, good)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises for a lambda
        save_checkpoint({"w": torch.zeros(2), "bad": lambda: 0}, good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert torch.equal(torch.load(good, weights_only=True)["w"], torch.ones(2))


def test_a_diverged_run_stops_naming_the_epoch(tmp_path):
    data = toy_annotations(num_classes=3, per_class=8, frames=20)
    path = save_annotations(data, tmp_path / "toy.pkl")
    args = [f"data.ann_file={path}", *SPLITS, *FAST, "trainer.epochs=3", "trainer.lr=1e30"]
    with pytest.raises(SystemExit, match="training loss is nan in epoch 1: the run diverged"):
        train(compose_config([*args, "trainer.batch_size=4"]), tmp_path / "run")
    # nothing of the diverged epoch: no checkpoint, no log row, no metrics
    assert not (tmp_path / "run/metrics.json").exists()
    assert not (tmp_path / "run/checkpoints/last.pt").exists()


def test_every_output_ranks_nan_scores_alike(tmp_path):
    """A diverged model's NaN scores: top-1, the confusion matrix and predictions.csv agree."""
    rng = np.random.default_rng(1)
    scores = rng.random((40, 7))
    scores[::3, 2] = np.nan  # a NaN in the row ranks last, never first
    scores[5] = np.nan  # all NaN: class 0
    labels = rng.integers(0, 7, 40)
    labels[::2] = np.nanargmax(scores[::2], 1)
    result = {"scores": scores, "labels": labels, "stream_scores": {"s": scores},
              "index": np.arange(40)}  # fmt: skip
    classes = [f"c{i}" for i in range(7)]
    metrics = write_eval_outputs(result, [f"n{i}" for i in range(40)], classes, "t", tmp_path)
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert metrics["top1"] == pytest.approx((preds["label"] == preds["pred"]).mean())
    expected = np.where(np.isnan(scores).all(1), 0, np.nanargmax(np.nan_to_num(scores, nan=-1), 1))
    assert preds["pred"].tolist() == expected.tolist()
    assert metrics["top1"] >= 0.5  # the half whose label is the best finite score
    cm = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0).to_numpy()
    assert np.trace(cm) == (preds["label"] == preds["pred"]).sum()
    top5 = np.mean([lab in np.argsort(-np.nan_to_num(s, nan=-1), kind="stable")[:5]
                    for s, lab in zip(scores, labels, strict=True)])  # fmt: skip
    assert metrics["top5"] == pytest.approx(top5)


def test_eval_keeps_every_preprocessing_setting_whatever_the_data_group():
    """`skelact eval ckpt=... data=GROUP` composes the group's defaults; every data.skeleton
    setting the checkpoint trained with comes back (interpolate and bone_lengths were lost
    before, and the model was scored on other inputs); the test-time ones may be chosen, an
    explicit override of the others is refused."""
    from omegaconf import OmegaConf

    from skelact.config import config_with_overrides
    from skelact.evaluate import conform_config

    trained = compose_config(["data=utdmhad_xsub", "data.ann_file=utd.store",
                              "data.skeleton.bone_lengths=median", "data.skeleton.interpolate=true",
                              "data.skeleton.clip_len=24"])  # fmt: skip
    ckpt = {"config": OmegaConf.to_container(trained), "layout": "kinect20",
            "specs": {"skeleton_joint": {"num_bodies": 1}}}  # fmt: skip
    rest = ["data=utdmhad_xsub", "data.skeleton.test_clips=3", "data.skeleton.test_views=[0,15]"]
    cfg = config_with_overrides(ckpt["config"], rest)
    assert cfg.data.skeleton.interpolate is False  # the group's default, before conforming
    conform_config(cfg, ckpt, rest)
    got = cfg.data.skeleton
    assert (got.bone_lengths, got.interpolate, got.clip_len) == ("median", True, 24)
    assert (got.test_clips, list(got.test_views), got.num_bodies) == (3, [0, 15], 1)
    for key, value in (("interpolate", "false"), ("bone_lengths", "keep")):
        asked = [*rest, f"data.skeleton.{key}={value}"]
        with pytest.raises(SystemExit, match=f"trained with data.skeleton.{key}="):
            conform_config(config_with_overrides(ckpt["config"], asked), ckpt, asked)


def test_eval_data_fold_chooses_that_folds_splits():
    """`skelact eval ckpt=... data.fold=3` on an SBU model: the checkpoint's config holds its
    splits resolved (fold1_test), and the fold alone used to leave them, scoring fold 1 again;
    the group's names are made again at fold 3, a split given on the command line stays."""
    from omegaconf import OmegaConf

    from skelact.config import config_with_overrides
    from skelact.evaluate import refold

    saved = OmegaConf.to_container(
        compose_config(["data=sbu", "data.ann_file=sbu.store"]), resolve=True
    )["data"]
    for asked, want in (
        (["data.fold=3"], ("sbu_fold3", "fold3_train", "fold3_test")),
        (["data.fold=3", "data.test_split=fold3_dev_val"], ("sbu_fold3", "fold3_train",
                                                            "fold3_dev_val")),
        (["data.test_split=fold2_test"], ("sbu_fold1", "fold1_train", "fold2_test")),
    ):  # fmt: skip
        cfg = config_with_overrides({"data": saved}, asked)
        refold(cfg, saved, asked)
        assert (cfg.data.name, cfg.data.train_split, cfg.data.test_split) == want, asked
    mine = {**saved, "name": "mine"}  # a fold key in a config of the user's own
    with pytest.raises(SystemExit, match="data.fold=2 does not choose this checkpoint's splits"):
        refold(config_with_overrides({"data": mine}, ["data.fold=2"]), mine, ["data.fold=2"])


def test_eval_refuses_another_model_setting(one_body_run):
    """`skelact eval ckpt=... model.fusion=ensemble` scored the checkpoint's network fused
    another way, silently; model.core.cell=gru was torch's multi-kilobyte state-dict error."""
    for override, what in (
        ("model.core.cell=gru", "model.core.cell: 'lstm' -> 'gru'"),
        ("model.fusion=mean", "model.fusion: 'ensemble' -> 'mean'"),
    ):
        with pytest.raises(SystemExit, match=re.escape(f"skelact eval: {what}: the checkpoint")):
            evaluate(one_body_run, one_body_run["data"], "model", override)
