"""Modality weights fit on carved training data, and skeleton streams untouched by an image
stream in the ensemble (skelact.fusion, Recognizer.group_weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skelact.config import compose_config
from skelact.fusion import carve_dev, carve_folds, fit_group_weights, groups_of, simplex_grid
from skelact.models.recognizer import build_recognizer

SKELETON_4S = ["skeleton_joint", "skeleton_bone", "skeleton_jmotion", "skeleton_bmotion"]


def onehot(pred, classes=3, p=0.8):
    out = np.full((len(pred), classes), (1 - p) / (classes - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_fit_prefers_the_skeleton_unless_the_other_stream_helps():
    labels = np.array([0, 1, 2] * 10)
    skel = labels.copy()
    skel[:3] = (labels[:3] + 1) % 3  # 3 errors of 30
    groups = groups_of(["skeleton_joint", "skeleton_bone", "depth"])
    assert groups == {"skeleton": ["skeleton_joint", "skeleton_bone"], "depth": ["depth"]}
    useless = (labels + 1) % 3  # depth always wrong
    scores = {
        "skeleton_joint": onehot(skel),
        "skeleton_bone": onehot(skel),
        "depth": onehot(useless),
    }
    weights, report = fit_group_weights(scores, labels, groups)
    assert weights["depth"] < 0.5 and report["dev_top1"] == 0.9
    assert report["dev_top1_per_modality"] == {"skeleton": 0.9, "depth": 0.0}
    # a depth stream right where the skeleton errs, less sure elsewhere: it gets weight
    helpful = onehot(labels, p=0.5)
    helpful[:3] = onehot(labels[:3], p=0.95)
    helpful[3:6] = onehot((labels[3:6] + 1) % 3, p=0.4)  # alone it is no better than the skeleton
    scores["depth"] = helpful
    weights, report = fit_group_weights(scores, labels, groups)
    assert report["dev_top1"] == 1.0 and 0 < weights["depth"] < 1
    assert abs(sum(weights.values()) - 1) < 1e-6
    grid = simplex_grid(3, 0.1)
    assert grid.shape == (66, 3) and np.allclose(grid.sum(1), 1)


def test_fit_ignores_a_mix_that_wins_by_one_development_sample():
    labels = np.array([0, 1, 2] * 10)
    skel = onehot(labels, p=0.5)
    skel[1:3] = onehot((labels[1:3] + 1) % 3, p=0.5)
    skel[0] = [0.34, 0.36, 0.30]  # a close error: 27 of 30 right
    depth = onehot(labels, p=0.9)
    depth[1:3] = onehot((labels[1:3] + 1) % 3, p=0.9)  # wrong where the skeleton is too
    depth[3:13] = onehot((labels[3:13] + 1) % 3, p=0.4)  # close errors: 18 of 30 right
    groups = groups_of(["skeleton_joint", "depth"])
    scores = {"skeleton_joint": skel, "depth": depth}
    # a little depth fixes sample 0: 28 of 30, one more than the skeleton alone
    weights, report = fit_group_weights(scores, labels, groups, min_gain=1)
    assert round(report["dev_top1"] * 30) == 28 and 0 < weights["depth"] < 1
    assert report["dev_top1_per_modality"] == {"skeleton": 0.9, "depth": 0.6}
    weights, report = fit_group_weights(scores, labels, groups)  # min_gain=2, the default
    assert weights == {"skeleton": 1.0, "depth": 0.0} and report["dev_top1"] == 0.9


def test_carve_dev_holds_out_whole_subjects_or_a_stratified_quarter():
    samples = [{"subject": s, "label": i % 3} for s in (1, 3, 5, 7) for i in range(6)]
    dev = carve_dev(samples)
    assert {samples[i]["subject"] for i in dev} == {7} and len(dev) == 6
    plain = [{"label": i % 4} for i in range(48)]
    dev = carve_dev(plain, seed=1)
    labels = np.array([plain[i]["label"] for i in dev])
    assert len(dev) == 12 and np.bincount(labels).tolist() == [3, 3, 3, 3]


def test_carve_folds_cover_the_split_once_by_whole_subjects_or_stratified():
    samples = [{"subject": s, "label": i % 3} for s in (7, 1, 5, 3, 9) for i in range(6)]
    folds = carve_folds(samples, 4)
    held = [sorted({samples[i]["subject"] for i in f}) for f in folds]
    assert held == [[1, 3], [5], [7], [9]]  # sorted subjects in consecutive groups
    assert sorted(np.concatenate(folds).tolist()) == list(range(30))
    assert [s for (s,) in held[1:]] == [5, 7, 9] and len(carve_folds(samples, 9)) == 5
    assert np.array_equal(carve_folds(samples, 1)[0], carve_dev(samples))
    plain = [{"label": i % 4} for i in range(50)]  # no subjects: stratified, 12 or 13 a fold
    folds = carve_folds(plain, 4, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(50))
    for f in folds:
        counts = np.bincount([plain[i]["label"] for i in f], minlength=4)
        assert len(f) in (12, 13) and counts.min() >= 3 and counts.max() <= 4
    other = carve_folds(plain, 4, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other, strict=True))


def _model(streams, seed=0, *overrides):
    cfg = compose_config(
        ["data=utdmhad_xsub", "data.ann_file=x", f"modality.streams={streams}", *overrides]
    )
    specs = {s: {"num_joints": 20, "channels": 6, "num_bodies": 1} for s in SKELETON_4S}
    specs["depth"] = {"feature_dim": 12}
    torch.manual_seed(seed)
    return build_recognizer(cfg.model, streams, 5, specs)


def test_an_image_stream_leaves_the_skeleton_streams_as_they_were():
    """Same seed: the skeleton streams of skeleton+depth start with the skeleton-only model's
    weights and draw the same dropout; the depth gradients are clipped on their own; with the
    depth weight at 0 the fused scores are the skeleton ensemble's."""
    alone = _model(SKELETON_4S)
    both = _model([*SKELETON_4S, "depth"])
    sd = both.state_dict()
    for k, v in alone.state_dict().items():
        assert torch.equal(v, sd[k]), k
    x = {s: torch.randn(4, 1, 8, 20, 6) for s in SKELETON_4S}
    x["depth"] = torch.randn(4, 8, 12)
    alone.train(), both.train()
    torch.manual_seed(5)
    a = alone(x)
    torch.manual_seed(5)
    b = both(x)
    for s in SKELETON_4S:
        assert torch.equal(a["streams"][s], b["streams"][s]), s  # same dropout draws
    assert [len(g) for g in both.grad_groups()] == [
        len(list(alone.parameters())),
        len(list(both.streams["depth"].parameters())) + 2,
    ]
    alone.eval(), both.eval()
    both.set_group_weights({"skeleton": 1.0, "depth": 0.0})
    assert torch.allclose(alone(x)["logits"], both(x)["logits"], atol=1e-6)
    both.set_group_weights({"skeleton": 1, "depth": 1})
    assert torch.allclose(both.group_weights, torch.tensor([0.5, 0.5]))


def test_modality_dropout_zeroes_one_modality_per_sample_in_training_only():
    streams = [*SKELETON_4S, "depth"]
    over = ("model.fusion=concat", "model.modality_dropout=0.4")
    net = _model(streams, 0, *over)
    embs = {s: torch.ones(2000, 3) for s in streams}
    torch.manual_seed(1)
    out = net.train().drop_modalities(embs)
    kept = torch.stack([x[:, 0] for x in out], 1)  # (N, 5): 1 kept, 0 dropped
    skeleton, depth = kept[:, 0], kept[:, 4]
    assert (kept[:, :4] == skeleton[:, None]).all()  # the skeleton streams go together
    assert ((skeleton + depth) >= 1).all()  # never both
    # a modality is lost with chance 0.4, less the samples that had lost both (0.16 / 2 each)
    for lost in (1 - skeleton.mean(), 1 - depth.mean()):
        assert 0.28 < lost.item() < 0.36
    same = zip(net.eval().drop_modalities(embs), embs.values(), strict=True)
    assert all(torch.equal(a, b) for a, b in same)  # evaluation: nothing dropped
    x = {s: torch.randn(4, 1, 8, 20, 6) for s in SKELETON_4S}
    x["depth"] = torch.randn(4, 8, 12)
    torch.manual_seed(2)
    a = net.train()(x)["logits"]
    torch.manual_seed(2)
    b = _model(streams, 0, "model.fusion=concat").train()(x)["logits"]
    assert a.shape == (4, 5) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="modality_dropout"):
        _model(streams, 0, "model.fusion=concat", "model.modality_dropout=1.0")
    with pytest.raises(ValueError, match="applies to model.fusion=concat"):
        _model(streams, 0, "model.modality_dropout=0.3")  # the default ensemble


def test_init_from_keeps_the_runs_own_modality_weights(tmp_path):
    """trainer.init_from copies a fused model's learned tensors but not its fitted modality
    weights: those are the new run's own (equal until its fit sets them)."""
    from skelact.checkpoints import init_weights

    trained = _model([*SKELETON_4S, "depth"])
    trained.set_group_weights({"skeleton": 0.9, "depth": 0.1})
    classes = [f"c{i}" for i in range(5)]
    torch.save(
        {"model": trained.state_dict(), "layout": "kinect20", "classes": classes},
        tmp_path / "fused.pt",
    )
    fresh = _model([*SKELETON_4S, "depth"], 1)
    report = init_weights(fresh, tmp_path / "fused.pt", "kinect20", classes)
    assert torch.allclose(fresh.group_weights, torch.tensor([0.5, 0.5]))
    assert report["fresh"] == ["group_weights"] and report["same_classes"]
    theirs = trained.state_dict()
    assert all(
        torch.equal(v, theirs[k]) for k, v in fresh.state_dict().items() if k != "group_weights"
    )
