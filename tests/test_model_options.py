"""The skeleton model options of issue 10: multi-stream inputs, the graph encoder, the temporal
convolution and the two-person features; each takes a training step."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from skelact.config import compose_config
from skelact.data.datasets import build_loaders
from skelact.data.formats.annotations import save_annotations
from skelact.data.prep.channels import MotionFeatures, paired_columns
from skelact.data.run import Data, make_loader
from skelact.engine import split_batch, train_one_epoch
from skelact.layouts import KINECT20, MEDIAPIPE33, NTU25, OPENNI15, body_parts, get_layout
from skelact.losses import (
    float_outputs,
    loss_terms,
    mix_batch,
    mutual_loss,
    mutual_losses,
    sharpness_step,
    stream_loss,
    view_consistency,
)
from skelact.models.dropout import Dropout
from skelact.models.encoders import JointMLP
from skelact.models.graph import GraphConv, GraphEncoder, partition_adjacency
from skelact.models.recognizer import build_recognizer
from skelact.runtime import native_bf16, train_dtype
from tests.conftest import assert_training_step, toy_annotations


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    """Two bodies of 20 joints in the kinect20 layout, so named-joint options apply."""
    data = toy_annotations(num_classes=3, per_class=4, frames=20, joints=20, bodies=2)
    data["layout"] = "kinect20"
    return save_annotations(data, tmp_path_factory.mktemp("toy") / "toy.pkl")


def compose(toy_file, *overrides):
    return compose_config(
        [
            f"data.ann_file={toy_file}",
            "data.train_split=train",
            "data.test_split=test",
            "data.skeleton.clip_len=8",
            "trainer.batch_size=4",
            "trainer.num_workers=0",
            *overrides,
        ]
    )


def first_batch(cfg):
    """The toy set's data, a model of seed 0 in eval mode, and the first unshuffled training
    batch, also split into the model's inputs and labels."""
    data = Data(cfg)
    dataset, specs = data.dataset(cfg.data, "train", train=True)
    torch.manual_seed(0)
    net = build_recognizer(cfg.model, data.streams, data.num_classes, specs).eval()
    batch = next(iter(make_loader(dataset, cfg.trainer, shuffle=False)))
    inputs, labels, _ = split_batch(batch, data.streams, "cpu")
    return data, net, batch, inputs, labels


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.skeleton.encoder=gcn"],
        ["model.skeleton.encoder=gcn", "model.skeleton.gcn.pool=mean", "data.layout=generic"],
        ["model.skeleton.encoder=gcn", "model.skeleton.gcn.pool=parts"],
        ["model.temporal_kernel=5"],
        ["model.skeleton.joint_kernel=3", "model.skeleton.joint_width=4"],
        ["model.temporal_kernel=3", "model.temporal_dilations=[1,2]"],
        ["data.skeleton.features=[joint,velocity,bone,partner]"],
        ["modality=skeleton_4s", "model.fusion=mean"],
        ["modality=skeleton_4s", "model.fusion=ensemble"],
        ["modality=skeleton_4s", "model.fusion=ensemble", "model.core.shared=true"],
        ["modality=skeleton_4s", "model=bilstm_4s", "model.replicas=2"],
        ["modality=skeleton_2s", "model.replicas=3"],  # concat fusion, aux losses, per replica
        ["modality=skeleton_2s", "model.skeleton.encoder=gcn", "model.temporal_kernel=3"],
        ["modality=skeleton_4s", "model=bilstm_4s", "model.attention_heads=3"],
        ["modality=skeleton_2s", "model.attention_heads=2"],  # concat fusion of wider embeddings
    ],
)
def test_option_takes_a_training_step(toy_file, overrides):
    cfg = compose(toy_file, *overrides)
    data = Data(cfg)
    dataset, specs = data.dataset(cfg.data, "train", train=True)
    net = build_recognizer(cfg.model, data.streams, data.num_classes, specs)
    batch = next(iter(make_loader(dataset, cfg.trainer, shuffle=True)))
    inputs, labels, _ = split_batch(batch, data.streams, "cpu")
    out = net(inputs)
    assert out["logits"].shape == (4, 3) and set(out["streams"]) == set(cfg.modality.streams)
    assert_training_step(net, out, labels)


def test_replicas_average_differently_initialised_models(toy_file):
    cfg = compose(toy_file, "modality=skeleton_4s", "model=bilstm_4s", "model.replicas=3")
    data = Data(cfg)
    dataset, specs = data.dataset(cfg.data, "train", train=True)
    torch.manual_seed(0)
    net = build_recognizer(cfg.model, data.streams, data.num_classes, specs).eval()
    single = compose(toy_file, "modality=skeleton_4s", "model=bilstm_4s").model
    torch.manual_seed(0)
    one = build_recognizer(single, data.streams, data.num_classes, specs)
    # replica 0 is the single model of the same seed; the others start elsewhere
    first = net.members[0].state_dict()
    assert all(torch.equal(first[k], v) for k, v in one.state_dict().items())
    w = [m.streams["skeleton_joint"].encoder.state_dict() for m in net.members]
    key = next(k for k in w[0] if k.endswith("weight"))
    assert not torch.equal(w[0][key], w[1][key]) and not torch.equal(w[1][key], w[2][key])
    batch = next(iter(make_loader(dataset, cfg.trainer, shuffle=False)))
    inputs, labels, _ = split_batch(batch, data.streams, "cpu")
    out = net(inputs)
    members = [m(inputs) for m in net.members]
    want = torch.stack([torch.softmax(o["logits"], -1) for o in members]).mean(0)
    torch.testing.assert_close(torch.softmax(out["logits"], -1), want)
    want_bone = torch.stack([torch.softmax(o["streams"]["skeleton_bone"], -1) for o in members])
    torch.testing.assert_close(
        torch.softmax(out["streams"]["skeleton_bone"], -1), want_bone.mean(0)
    )
    # each replica's four streams on their own losses: 12 terms, summed
    assert loss_terms(out) == 12
    total = stream_loss(out, labels, 0.1, 0.5)
    torch.testing.assert_close(total, sum(stream_loss(o, labels, 0.1, 0.5) for o in members))


def test_replica_augment_gives_each_replica_its_own_view(toy_file):
    """model.replica_augment: the training loader draws one augmented view per replica (the
    first is the one a plain run draws), and replica r trains on view r only."""
    over = ("modality=skeleton_4s", "model=bilstm_4s", "model.replicas=3")
    cfg = compose(toy_file, *over, "model.replica_augment=true")
    plain = compose(toy_file, *over)
    data = Data(cfg)
    sample = data.store[0]
    (load,) = build_loaders(cfg.data, cfg.model, data.store, data.streams, True)[0].values()
    (load1,) = build_loaders(plain.data, plain.model, data.store, data.streams, True)[0].values()
    views, one = load(sample, np.random.default_rng(5)), load1(sample, np.random.default_rng(5))
    x = views["skeleton_joint"]
    assert x.shape[0] == 3 and one["skeleton_joint"].shape[0] == 1
    torch.testing.assert_close(x[:1], one["skeleton_joint"])
    assert not torch.allclose(x[0], x[1]) and not torch.allclose(x[1], x[2])
    # test loaders are not multiplied
    (test_load,) = build_loaders(cfg.data, cfg.model, data.store, data.streams, False)[0].values()
    assert test_load(sample, None)["skeleton_joint"].shape[0] == cfg.data.skeleton.test_clips

    dataset, specs = data.dataset(cfg.data, "train", train=True)
    torch.manual_seed(0)
    net = build_recognizer(cfg.model, data.streams, data.num_classes, specs)
    batch = next(iter(make_loader(dataset, cfg.trainer, shuffle=False)))
    inputs, labels, k = split_batch(batch, data.streams, "cpu")
    assert k == 3 and inputs["skeleton_joint"].shape[0] == 3 * len(labels)
    parts = net.views({**inputs, "image": torch.zeros(len(labels), 2)})
    for r, part in enumerate(parts):
        torch.testing.assert_close(part["skeleton_bone"], inputs["skeleton_bone"][r::3])
        assert part["image"].shape[0] == len(labels)  # an input of N rows goes to every replica
    out = net.eval()(parts[1])  # evaluation: one input for all replicas
    members = [m(parts[1]) for m in net.members]
    want = torch.stack([torch.softmax(o["logits"], -1) for o in members]).mean(0)
    torch.testing.assert_close(torch.softmax(out["logits"], -1), want)
    out = net.train()(inputs)
    assert out["logits"].shape == (len(labels), 3)
    assert all(o["logits"].shape == (len(labels), 3) for o in out["members"])
    assert_training_step(net, out, labels)
    alone = compose(toy_file, *over[:2], "model.replica_augment=true").model  # one replica
    with pytest.raises(ValueError, match="needs model.replicas > 1"):
        build_recognizer(alone, data.streams, data.num_classes, specs)


def test_streams_share_one_pipeline_pass(toy_file):
    """The 4 streams are exactly the channels the single stream computes from the same pass:
    each its own kind, then the partner channels every stream shares."""
    cfg4 = compose(toy_file, "modality=skeleton_4s")
    kinds = "[joint,bone,velocity,bone_velocity,partner]"
    cfg1 = compose(toy_file, f"data.skeleton.features={kinds}")
    data = Data(cfg1)
    sample = data.store[0]
    loaders4, specs = build_loaders(cfg4.data, cfg4.model, data.store, cfg4.modality.streams, True)
    (load4,) = loaders4.values()  # one loader for the four streams
    load1 = build_loaders(cfg1.data, cfg1.model, data.store, ["skeleton"], True)[0]["skeleton"]
    four = load4(sample, np.random.default_rng(3))
    one = load1(sample, np.random.default_rng(3))
    assert one.shape[-1] == 15 and one[..., 12:].abs().sum() > 0  # two bodies: a partner
    for i, name in enumerate(cfg4.modality.streams):
        assert specs[name]["channels"] == 6
        torch.testing.assert_close(four[name][..., :3], one[..., 3 * i : 3 * i + 3])
        torch.testing.assert_close(four[name][..., 3:], one[..., 12:])


def test_attention_heads_each_pool_the_clip_their_own_way():
    """model.attention_heads=3: three softmaxes over time from one scorer, each pooling the
    whole feature vector, joined; absent frames get no weight in any head; one head is the
    single attention (same weights, same output)."""
    from skelact.models.temporal import TemporalAttention

    torch.manual_seed(0)
    multi = TemporalAttention(6, 8, heads=3)
    h = torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    pooled, mean_w = multi(h, mask)
    assert pooled.shape == (2, 18) and multi.out_dim == 18 and mean_w.shape == (2, 5)
    scores = multi.score(h).masked_fill(~mask[..., None], float("-inf"))
    w = torch.softmax(scores, 1)  # (N, T, heads), computed apart
    for k in range(3):
        torch.testing.assert_close(pooled[:, 6 * k : 6 * (k + 1)], (w[..., k, None] * h).sum(1))
    assert not torch.allclose(w[..., 0], w[..., 1])  # the heads do differ
    torch.testing.assert_close(mean_w, w.mean(-1))
    assert torch.all(mean_w[0, 2] == 0)
    one = TemporalAttention(6, 8, heads=1)
    one.score[0].load_state_dict(multi.score[0].state_dict())
    one.score[2].weight.data, one.score[2].bias.data = (
        multi.score[2].weight[:1],
        multi.score[2].bias[:1],
    )
    p1, w1 = one(h, mask)
    torch.testing.assert_close(p1, pooled[:, :6])
    torch.testing.assert_close(w1, w[..., 0])
    with pytest.raises(ValueError, match="heads"):
        TemporalAttention(6, 8, heads=0)


def test_bone_velocity_and_partner_features():
    rng = np.random.default_rng(0)
    kp = rng.normal(size=(2, 5, 20, 3)).astype(np.float32)  # (M, T, V, C)
    kp[1, 3] = 0  # the partner is absent in frame 3
    out = MotionFeatures(KINECT20, ["bone", "bone_velocity", "partner"])({"keypoint": kp})
    bone, bvel, partner = np.split(out["keypoint"], 3, axis=-1)
    np.testing.assert_allclose(bvel[:, 1], bone[:, 2] - bone[:, 1], rtol=1e-5)
    np.testing.assert_allclose(bvel[:, -1], 0)  # last frame repeated
    centre0 = kp[0, 0, KINECT20.center].mean(0)
    np.testing.assert_allclose(partner[0, 0], kp[1, 0] - centre0, rtol=1e-5, atol=1e-6)
    assert not partner[:, 3].any()  # no partner, no relation
    one = MotionFeatures(KINECT20, ["partner"])({"keypoint": kp[:1]})["keypoint"]
    assert not one.any()  # single-person data: all zero


def test_partner_distance_feature():
    rng = np.random.default_rng(1)
    kp = rng.normal(size=(2, 5, 15, 3)).astype(np.float32)  # (M, T, V, C)
    kp[0, 2] = 0  # the first person is absent in frame 2
    kinds = ["joint", "partner_distance"]
    out = MotionFeatures(OPENNI15, kinds)({"keypoint": kp})["keypoint"]
    assert out.shape == (2, 5, 15, 18) and MotionFeatures.channels(kinds, 3, 15) == 18
    dist = out[..., 3:]
    # body 0's right hand to body 1's head, and body 1's joints to body 0's
    assert dist[0, 1, 5, 0] == pytest.approx(np.linalg.norm(kp[0, 1, 5] - kp[1, 1, 0]), rel=1e-5)
    assert dist[1, 4, 2, 9] == pytest.approx(np.linalg.norm(kp[1, 4, 2] - kp[0, 4, 9]), rel=1e-5)
    np.testing.assert_allclose(dist[0, 3], dist[1, 3].T, rtol=1e-5)  # the same pairs, swapped
    assert not dist[:, 2].any() and dist[:, 1].all()  # either one absent: no relation
    one = MotionFeatures(OPENNI15, kinds)({"keypoint": kp[:1]})["keypoint"]
    assert one.shape == (1, 5, 15, 18) and not one[..., 3:].any()


def test_body_parts_cover_every_joint_once():
    for layout in (NTU25, KINECT20, OPENNI15, MEDIAPIPE33):
        parts = body_parts(layout)
        joints = sorted(v for part in parts.values() for v in part)
        assert joints == list(range(layout.num_joints)), layout.name
        names = {k: {layout.joints[v] for v in part} for k, part in parts.items()}
        assert {"left_elbow", "left_shoulder"} <= names["left_arm"]
        assert {"right_knee", "right_hip"} <= names["right_leg"]
        assert not any("left" in j for j in names["right_arm"] | names["right_leg"])
    assert len(body_parts(NTU25)["left_arm"]) == 6  # shoulder to thumb and hand tip
    assert "right_foot_index" in {
        MEDIAPIPE33.joints[v] for v in body_parts(MEDIAPIPE33)["right_leg"]
    }
    with pytest.raises(ValueError, match="no named joints"):
        body_parts(get_layout("generic", 7))


def test_parts_pool_averages_each_part():
    """pool=parts hands the projection each part's mean joint feature, nothing else."""
    enc = GraphEncoder(KINECT20, 3, 1, width=4, layers=1, hidden=8, out_dim=8, pool="parts")
    seen = {}
    enc.project.register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    x = torch.randn(2, 1, 3, 20, 3)
    enc(x)
    h = enc.convs(x.reshape(6, 20, 3))  # (N M T, V, W)
    want = torch.cat([h[:, list(p)].mean(1) for p in body_parts(KINECT20).values()], 1)
    torch.testing.assert_close(seen["x"], want)


def test_partition_adjacency():
    a = partition_adjacency(KINECT20)
    assert a.shape == (3, 20, 20)
    np.testing.assert_allclose(a.sum((0, 2)), 1.0, rtol=1e-6)  # each joint averages inputs
    j = KINECT20.index
    # the elbow receives from the shoulder towards the centre, from the wrist away from it
    assert (
        a[1, j("left_elbow"), j("left_shoulder")] > 0 and a[2, j("left_elbow"), j("left_wrist")] > 0
    )
    assert a[1, j("left_elbow"), j("left_wrist")] == 0
    o = partition_adjacency(OPENNI15)
    assert o[2, OPENNI15.index("torso"), OPENNI15.index("neck")] > 0  # torso is the centre
    g = partition_adjacency(get_layout("generic", 7))
    assert g.shape == (2, 7, 7)


def test_graph_encoder_shapes_and_learned_graph():
    enc = GraphEncoder(KINECT20, in_channels=9, num_bodies=2, width=16, layers=2, out_dim=32)
    x = torch.randn(3, 2, 5, 20, 9)  # (N, M, T, V, C)
    h = enc(x)
    assert h.shape == (3, 5, 32)
    h.sum().backward()
    assert enc.convs[0].residual_adj.grad.abs().sum() > 0  # the residual graph is learned


def test_ensemble_fusion_averages_probabilities_and_trains_streams_alone():
    from skelact.models.recognizer import Recognizer

    net = Recognizer({k: _Plain(torch.nn.Linear(4, 4)) for k in "ab"}, 3, fusion="ensemble")
    x = {"a": torch.randn(5, 4), "b": torch.randn(5, 4)}
    out = net(x)
    want = (out["streams"]["a"].softmax(-1) + out["streams"]["b"].softmax(-1)) / 2
    torch.testing.assert_close(out["logits"].exp(), want)
    labels = torch.tensor([0, 1, 2, 0, 1])
    loss = stream_loss(out, labels, 0.0, 0.5)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(
        loss, ce(out["streams"]["a"], labels) + ce(out["streams"]["b"], labels)
    )


def test_mutual_loss_pulls_each_stream_to_the_fixed_ensemble():
    """trainer.mutual=w: mutual_loss is w x KL(fused || stream) summed over the streams, by hand;
    the fused target is held fixed, so a stream's logits get w (softmax - fused) / N more
    gradient than from its cross-entropy alone."""
    torch.manual_seed(0)
    logits = {f"skeleton_{k}": torch.randn(5, 3, requires_grad=True) for k in "ab"}
    a, b = logits.values()
    fused = torch.log((a.softmax(-1) + b.softmax(-1)) / 2)
    out = {"logits": fused, "streams": logits, "independent": True}
    labels = torch.tensor([0, 1, 2, 0, 1])
    ce = torch.nn.functional.cross_entropy
    plain = stream_loss(out, labels, 0.0, 0.5)
    loss = plain + mutual_loss(out, 0.3)
    q = fused.detach().exp()
    kl = sum((q * (q.log() - x.log_softmax(-1))).sum(-1).mean() for x in logits.values())
    torch.testing.assert_close(loss, plain + 0.3 * kl)
    (grad_a,) = torch.autograd.grad(loss, a, retain_graph=True)
    (ce_a,) = torch.autograd.grad(ce(a, labels), a)
    want = ce_a + 0.3 * (a.softmax(-1) - q) / 5
    torch.testing.assert_close(grad_a, want)
    # two modalities: each skeleton stream learns from the skeleton streams' average only
    both = {**logits, "depth": torch.randn(5, 3)}
    mixed = {"logits": torch.randn(5, 3), "streams": both, "independent": True}
    terms = [t.item() for t in mutual_losses(mixed, 0.3)]
    assert terms[:2] == pytest.approx([t.item() for t in mutual_losses(out, 0.3)])
    assert terms[2] == pytest.approx(0.0, abs=1e-6)  # depth alone in its modality
    # replicas: each member's own; other fusions: none
    twice = mutual_loss({"members": [out, out]}, 0.3)
    torch.testing.assert_close(twice, 2 * mutual_loss(out, 0.3))
    assert mutual_loss({**out, "independent": False}, 0.3) == 0.0


def test_view_consistency_is_the_js_divergence_between_views():
    """trainer.consistency=w with 2 views: w x the Jensen-Shannon divergence of each sample's
    two views' predictions, by hand; gradients reach both views; zero for equal views, for one
    view, or a weight of 0; an ensemble sums its streams' terms, replicas their members'."""
    torch.manual_seed(0)
    a = torch.randn(6, 4, requires_grad=True)  # 3 samples x 2 views, views adjacent
    b = torch.randn(6, 4)
    out = {"logits": a, "streams": {"skeleton_a": a, "skeleton_b": b}, "independent": False}
    p, q = a.softmax(-1)[0::2], a.softmax(-1)[1::2]
    m = (p + q) / 2
    js = 0.5 * ((p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)).mean()
    loss = view_consistency(out, 2, 0.7)
    torch.testing.assert_close(loss, 0.7 * js)
    assert loss.item() > 0.01
    (grad,) = torch.autograd.grad(loss, a)
    assert grad[0::2].abs().sum() > 0 and grad[1::2].abs().sum() > 0
    same = a.detach()[0::2].repeat_interleave(2, 0)
    assert view_consistency({**out, "logits": same}, 2, 0.7).item() == pytest.approx(0, abs=1e-6)
    assert view_consistency(out, 1, 0.7) == 0.0 and view_consistency(out, 2, 0.0) == 0.0
    ens = {**out, "independent": True}
    want = view_consistency({**out, "logits": a}, 2, 0.7) + view_consistency(
        {**out, "logits": b}, 2, 0.7
    )
    torch.testing.assert_close(view_consistency(ens, 2, 0.7), want)
    torch.testing.assert_close(view_consistency({"members": [out, out]}, 2, 0.7), 2 * loss)


def one_epoch(toy_file, cfg, data, lr, trainer):
    """A model of seed 0 trained one epoch (SGD at a constant `lr`, seed 1, the training split
    unshuffled) with the trainer settings of `compose(toy_file, *trainer)`; returns the model
    and train_one_epoch's result."""
    dataset, specs = data.dataset(cfg.data, "train", train=True)
    loader = make_loader(dataset, cfg.trainer, shuffle=False)
    torch.manual_seed(0)
    net = build_recognizer(cfg.model, data.streams, data.num_classes, specs)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    tcfg = compose(toy_file, *trainer).trainer
    torch.manual_seed(1)
    result = train_one_epoch(net, loader, opt, sched, "cpu", data.streams, tcfg, 0, show=False)
    return net, result


def test_training_views_each_train_as_a_sample_with_their_label(toy_file):
    """trainer.views=2: the training loader draws two augmented views of every
    sample (the first is the one a plain run draws; test loaders are not multiplied), and an
    epoch trains on both, each with its sample's label: the epoch sees twice the rows, and the
    logged loss includes the consistency term. With replica_augment it is refused."""
    over = ("modality=skeleton_4s", "model=bilstm_4s", "trainer.epochs=1")
    cfg = compose(toy_file, *over, "trainer.views=2", "trainer.consistency=2.0")
    plain = compose(toy_file, *over)
    data = Data(cfg)
    sample = data.store[0]
    (load,) = build_loaders(cfg.data, cfg.model, data.store, data.streams, True, 2)[0].values()
    (load1,) = build_loaders(plain.data, plain.model, data.store, data.streams, True)[0].values()
    views, one = load(sample, np.random.default_rng(5)), load1(sample, np.random.default_rng(5))
    x = views["skeleton_joint"]
    assert data.views == 2 and x.shape[0] == 2 and one["skeleton_joint"].shape[0] == 1
    torch.testing.assert_close(x[:1], one["skeleton_joint"])
    assert not torch.allclose(x[0], x[1])
    (test_load,) = build_loaders(cfg.data, cfg.model, data.store, data.streams, False)[0].values()
    assert test_load(sample, None)["skeleton_joint"].shape[0] == cfg.data.skeleton.test_clips

    runs = {}
    for weight in (0.0, 2.0):  # lr 0: the loss of unchanged weights
        trainer = (*over, "trainer.views=2", f"trainer.consistency={weight}")
        net, runs[weight] = one_epoch(toy_file, cfg, data, 0.0, trainer)
    dataset = data.dataset(cfg.data, "train", train=True)[0]
    assert runs[0.0]["seen"] == 2 * len(dataset)
    assert runs[2.0]["loss"] > runs[0.0]["loss"] + 1e-4  # the views disagree: JS > 0
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    with pytest.raises(ValueError, match="2 training views expected"):
        train_one_epoch(net, make_loader(Data(plain).dataset(plain.data, "train", True)[0],
                        plain.trainer, shuffle=False), opt, sched, "cpu", data.streams,
                        cfg.trainer, 0, show=False)  # fmt: skip
    both = compose(toy_file, *over, "model.replicas=2", "model.replica_augment=true",
                   "trainer.views=2")  # fmt: skip
    with pytest.raises(ValueError, match="do not combine"):
        Data(both).dataset(both.data, "train", train=True)
    recipe = compose(toy_file, "trainer=consistency").trainer
    assert (recipe.views, recipe.consistency, recipe.epochs) == (2, 4.0, 60)


def test_sharpness_step_takes_the_gradient_at_the_perturbed_weights(toy_file):
    """trainer.sam=rho: inside sharpness_step the weights are w + rho g / |g| (a move of length
    rho along the gradient), a training pass there leaves BatchNorm's running statistics as
    they were, and the gradient left for the optimizer is that of a copy of the model placed
    at those weights by hand; afterwards the weights are w again, exactly."""
    cfg = compose(toy_file, "model.skeleton.input_norm=true")
    data, net, _, inputs, labels = first_batch(cfg)
    net.train()
    loss = lambda m: stream_loss(m(inputs), labels, 0.1, 0.5)  # noqa: E731
    loss(net).backward()
    names = [n for n, p in net.named_parameters() if p.grad is not None]
    w = {n: p.detach().clone() for n, p in net.named_parameters()}
    g = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    gnorm = torch.linalg.vector_norm(torch.stack([v.norm() for v in g.values()]))
    stats = {n: b.clone() for n, b in net.named_buffers() if "running" in n}
    assert stats, "the toy model should have a BatchNorm"
    moved = copy.deepcopy(net)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            if n in g:
                p.add_(g[n] * (0.05 / gnorm))
    moved.zero_grad()
    torch.manual_seed(3)  # the same dropout masks in both passes
    loss(moved).backward()
    with sharpness_step(net, 0.05):
        step = torch.cat([(p.detach() - w[n]).flatten() for n, p in net.named_parameters()])
        assert torch.linalg.vector_norm(step).item() == pytest.approx(0.05, rel=1e-4)
        net.zero_grad()
        torch.manual_seed(3)
        loss(net).backward()
        for n, b in net.named_buffers():
            if n in stats:
                torch.testing.assert_close(b, stats[n], rtol=0, atol=0)
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), w[n])
    at = dict(moved.named_parameters())
    for n in names:
        torch.testing.assert_close(dict(net.named_parameters())[n].grad, at[n].grad)
    assert any(not torch.allclose(g[n], at[n].grad) for n in names)  # the gradient moved

    # train_one_epoch takes its steps with that gradient when trainer.sam is set
    weights = {}
    for rho in (0.0, 0.05):
        trainer = ("model.skeleton.input_norm=true", f"trainer.sam={rho}")
        model, _ = one_epoch(toy_file, cfg, data, 0.1, trainer)
        weights[rho] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.isfinite(weights[0.05]).all()
    assert not torch.allclose(weights[0.0], weights[0.05])


class _Plain(torch.nn.Module):
    """A stand-in stream with the Stream interface: (N, 4) -> embedding, attention."""

    def __init__(self, lin):
        super().__init__()
        self.lin, self.out_dim = lin, 4

    def forward(self, x):
        return self.lin(x), torch.ones(len(x), 1)


def test_distance_stream_reads_each_pair_once_with_the_same_training(toy_file):
    """The joint MLP of the distance stream reads each pair of joints once (not (i, j) and
    (j, i), nor the zero diagonal) by folded weights: the same outputs, and three AdamW steps
    from one initialisation end at the same parameters as the layer over every column. The
    loaders give the default streams the kinds that let the model fold."""
    kinds = ["joint", "distance", "height", "partner"]
    keep, twin, sign = paired_columns(kinds, MotionFeatures.channels(kinds, 3, 20), 20)
    assert len(keep) == 20 * 6 + 2 * 190  # joint, partner; 190 pairs each of distance, height
    assert paired_columns(["joint", "partner"], 6, 20) is None
    only = paired_columns(["distance"], 20, 20)  # no kind of C channels
    assert len(only[0]) == 190 and (only[1] // 20 > only[0] // 20).all()
    rng = np.random.default_rng(4)
    kp = rng.normal(size=(3, 2, 6, 20, 3)).astype(np.float32)  # (N, M, T, V, C)
    kp[0, 1] = 0  # one sample of one person
    x = torch.from_numpy(MotionFeatures(KINECT20, kinds)({"keypoint": kp})["keypoint"])
    flat = x.reshape(3, 2, 6, -1)
    torch.testing.assert_close(
        flat[..., twin[sign != 0]], flat[..., keep[sign != 0]] * torch.from_numpy(sign[sign != 0])
    )
    torch.manual_seed(0)
    full = JointMLP(20, x.shape[-1], 2, 32, 16)
    folded = JointMLP(20, x.shape[-1], 2, 32, 16, pairs=(keep, twin, sign))
    folded.load_state_dict(full.state_dict())  # the same parameters: checkpoints interchange
    torch.testing.assert_close(folded(x), full(x))
    # under bfloat16 autocast the columns are cast before they are gathered (half the bytes
    # moved): the same as gathering float32 columns and letting the linear cast them
    with torch.autocast("cpu", torch.bfloat16):
        first = folded.mlp[0]
        w = first.weight[:, folded.fold_keep] + first.weight[:, folded.fold_twin] * folded.fold_sign
        cols = torch.cat([flat[..., a:b] for a, b in folded.fold_runs], -1)  # float32
        h = folded.mlp[1:](torch.nn.functional.linear(cols, w, first.bias))
        assert torch.equal(folded(x), folded.merge(h.permute(0, 2, 1, 3).reshape(3, 6, -1)))
    start = full.mlp[0].weight.detach().clone()
    target = torch.randn(3, 6, 16)
    for net in (full, folded):
        opt = torch.optim.AdamW(net.parameters(), 1e-2)
        for _ in range(3):
            opt.zero_grad()
            (net(x) - target).square().mean().backward()
            opt.step()
    for (name, a), b in zip(full.named_parameters(), folded.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    moved = (full.mlp[0].weight - start).abs()  # every weight read moved, the twins too
    assert (moved[:, keep] > 1e-3).float().mean() > 0.95
    assert (moved[:, twin] > 1e-3).float().mean() > 0.95
    cfg = compose(toy_file, "modality=skeleton_5s")
    data = Data(cfg)
    _, specs = build_loaders(cfg.data, cfg.model, data.store, cfg.modality.streams, True)
    net = build_recognizer(cfg.model, list(cfg.modality.streams), 3, specs)
    assert net.streams["skeleton_dist"].encoder.folded
    assert not net.streams["skeleton_joint"].encoder.folded  # nothing repeats there
    # where the first layer does not read the raw columns, every column is read
    assert not JointMLP(20, x.shape[-1], 2, 32, 16, 0.0, True, pairs=(keep, twin, sign)).folded


def test_shared_core_runs_once_and_equals_per_stream_runs(toy_file):
    cfg = compose(toy_file, "modality=skeleton_2s", "model.core.shared=true")
    specs = {
        n: {"num_joints": 20, "channels": 6, "num_bodies": 2, "layout": "kinect20"}
        for n in cfg.modality.streams
    }
    net = build_recognizer(cfg.model, list(cfg.modality.streams), 3, specs).eval()
    a, b = net.streams.values()
    assert a.core is b.core and len(list(net.parameters())) < 2 * len(list(a.parameters())) + 8
    x = {n: torch.randn(2, 2, 6, 20, 6) for n in cfg.modality.streams}
    batched = net.encode(x)
    for name, stream in net.streams.items():
        emb, att = stream(x[name])  # the stream alone through the same core
        torch.testing.assert_close(batched[name][0], emb)
        torch.testing.assert_close(batched[name][1], att)


def test_graph_encoder_temporal_blocks_see_only_their_frames():
    """gcn.temporal_kernel=k: a change at frame 5 reaches frames 5 +- (k // 2) per layer and
    no further (two layers of kernel 3: frames 3..7); without it, only frame 5."""
    from skelact.layouts import get_layout
    from skelact.models.graph import GraphEncoder

    torch.manual_seed(0)
    layout = get_layout("kinect20", 20)
    x = torch.randn(1, 1, 12, 20, 3)
    bumped = x.clone()
    bumped[:, :, 5] += 1.0
    for kernel, reach in ((3, {3, 4, 5, 6, 7}), (0, {5})):
        enc = GraphEncoder(layout, 3, 1, 8, 2, 16, 8, 0.0, "flatten", kernel).eval()
        changed = (enc(bumped) - enc(x)).abs().amax(-1)[0] > 1e-6  # (T,)
        assert set(torch.nonzero(changed).flatten().tolist()) == reach


def test_joint_temporal_conv_sees_its_joint_over_its_frames():
    """model.skeleton.joint_kernel=5: a change of joint 3 at frame 10 reaches the convolution's
    outputs of joint 3 at frames 8..12 only, of that body only; the joint MLP then sees the
    joint's channels unchanged beside those outputs (C + joint_width per joint)."""
    from skelact.models.encoders import JointMLP

    torch.manual_seed(0)
    enc = JointMLP(25, 6, 2, 32, 16, 0.0, False, joint_kernel=5, joint_width=4).eval()
    assert enc.mlp[0].in_features == 25 * (6 + 4)
    x = torch.randn(2, 2, 20, 25, 6)
    bumped = x.clone()
    bumped[1, 0, 10, 3] += 1.0
    changed = (enc.joint_conv(bumped) - enc.joint_conv(x)).abs().amax(-1) > 1e-6  # (N,M,T,V)
    assert set(map(tuple, torch.nonzero(changed).tolist())) == {(1, 0, t, 3) for t in range(8, 13)}
    assert enc(x).shape == (2, 20, 16)
    with pytest.raises(ValueError, match="odd"):
        JointMLP(25, 6, 2, 32, 16, joint_kernel=4)


@pytest.mark.parametrize(
    "dilations, reach",
    [((1,), {8, 9, 10, 11, 12}), ((1, 2), {6, 8, 9, 10, 11, 12, 14}), ((3,), {4, 7, 10, 13, 16})],
)
def test_temporal_conv_dilations_reach_their_frames(dilations, reach):
    """model.temporal_dilations: kernel 5 at dilation d reads frames t + d * (-2..2); several
    dilations sum their branches, so a change at frame 10 reaches the union of their taps."""
    from skelact.models.temporal import TemporalConv

    torch.manual_seed(0)
    conv = TemporalConv(8, 5, dilations).eval()
    x = torch.randn(1, 20, 8)
    bumped = x.clone()
    bumped[:, 10] += 1.0
    changed = (conv(bumped) - conv(x)).abs().amax(-1)[0] > 1e-6  # (T,)
    assert set(torch.nonzero(changed).flatten().tolist()) == reach
    assert len(list(conv.parameters())) == 2 * len(dilations) + 2  # conv weights, biases, norm


def test_core_trains_on_torchs_own_lstm_with_the_same_function():
    """Float32 CPU training runs torch's own LSTM kernels, not oneDNN's (faster there): the
    same outputs and gradients as oneDNN, oneDNN still used without gradients and the global
    flag left as it was."""
    from torch.profiler import profile

    from skelact.models.temporal import RecurrentCore

    torch.manual_seed(0)
    core = RecurrentCore(16, 8)
    x = torch.randn(4, 10, 16, requires_grad=True)

    def run(native: bool):
        core.native_training = native
        with profile() as prof:
            out = core(x)
            grads = torch.autograd.grad(out.square().sum(), [x, *core.parameters()])
        kernels = {e.key for e in prof.key_averages() if "mkldnn_rnn" in e.key}
        return out, grads, kernels

    out, grads, kernels = run(True)
    ref, ref_grads, ref_kernels = run(False)
    assert not kernels
    assert ref_kernels == {"aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward"}
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
    assert torch.backends.mkldnn.enabled
    core.native_training = True
    with torch.no_grad(), profile() as prof:
        core(x)
    assert any("mkldnn_rnn" in e.key for e in prof.key_averages())


@pytest.mark.parametrize("c_in", [6, 32, 48])
def test_graph_conv_equals_the_adjacency_sum(c_in):
    """Both evaluation orders of GraphConv give sum_k (A_k + B_k) (x W_k + b_k), bias included."""
    adjacency = torch.from_numpy(partition_adjacency(get_layout("ntu25", 25)))
    torch.manual_seed(0)
    conv = GraphConv(adjacency, c_in, 32)
    with torch.no_grad():
        conv.residual_adj.normal_(0, 0.1)
        conv.weight.bias.normal_(0, 1.0)
    x = torch.randn(5, 25, c_in)
    y = conv.weight(x).view(5, 25, conv.k, 32)
    mixed = torch.einsum("kvw,bwkc->bvc", conv.adjacency + conv.residual_adj, y)
    expected = conv.act(conv.norm(mixed + conv.skip(x)))
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_dropout_keeps_one_minus_p_and_scales():
    torch.manual_seed(0)
    drop = Dropout(0.3)
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    kept = y > 0
    # binomial: std of the kept fraction is 0.001 here, so 0.005 is five of them
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient: the same mask and scale
    torch.manual_seed(0)
    assert torch.equal(Dropout(0.3)(torch.ones(200_000)), y.detach())  # seeded by torch
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="p must be"):
        Dropout(1.0)


def test_train_dtype_choices():
    cpu = torch.device("cpu")
    assert train_dtype("fp32", cpu) is None
    assert train_dtype("bf16", cpu) is torch.bfloat16
    assert train_dtype("auto", cpu) is (torch.bfloat16 if native_bf16() else None)
    assert train_dtype("auto", torch.device("cuda")) is None  # CUDA: fp32 unless asked
    with pytest.raises(SystemExit, match="choose auto, fp32 or bf16"):
        train_dtype("fp16", cpu)


@pytest.mark.parametrize("overrides", [[], ["model.skeleton.encoder=gcn"]])
def test_bf16_autocast_gradients_match_fp32(toy_file, overrides):
    """A bfloat16 autocast step computes float32 losses and the float32 step's gradients to a
    few per cent, and leaves the weights float32 (what trainer.precision=bf16 trains with)."""
    cfg = compose(toy_file, "modality=skeleton_4s", *overrides)
    data, net, _, inputs, labels = first_batch(cfg)
    grads = []
    for dtype in (None, torch.bfloat16):
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            raw = net(inputs)
        assert raw["logits"].dtype == (dtype or torch.float32)
        out = float_outputs(raw)
        assert out["logits"].dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in out["streams"].values())
        stream_loss(out, labels, 0.1, 0.5).backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert all(p.dtype == torch.float32 for p in net.parameters())
    full, half = grads
    assert full.abs().max() > 0
    rel = (half - full).norm() / full.norm()
    assert rel < 0.02, rel  # bfloat16 keeps 8 bits of mantissa: about 0.5 % here
    assert torch.dot(half, full) / (half.norm() * full.norm()) > 0.99


def test_mixup_blends_whole_samples_with_their_partners():
    torch.manual_seed(3)
    labels = torch.tensor([0, 1, 2, 3])
    joint = torch.randn(4, 6, 5)  # one view of each sample
    views = torch.randn(8, 6, 5)  # two views of each sample, adjacent (replica_augment)
    inputs = {"skeleton_joint": joint, "skeleton_bone": views}
    mixed, partners, lam = mix_batch(inputs, labels, 0.4)
    assert 0.0 < lam < 1.0
    assert sorted(partners.tolist()) == [0, 1, 2, 3]
    for i, j in enumerate(partners.tolist()):  # labels double as row numbers here
        want = lam * joint[i] + (1 - lam) * joint[j]
        torch.testing.assert_close(mixed["skeleton_joint"][i], want)
        for v in range(2):  # view v blended with the partner's view v
            want = lam * views[2 * i + v] + (1 - lam) * views[2 * j + v]
            torch.testing.assert_close(mixed["skeleton_bone"][2 * i + v], want)
    assert torch.equal(inputs["skeleton_joint"], joint)  # the inputs are left as they were
    with pytest.raises(ValueError, match="7 rows for 4 labels"):
        mix_batch({"skeleton_joint": torch.randn(7, 6, 5)}, labels, 0.4)


def test_mixup_trains_on_the_blend_of_both_labels(toy_file):
    """One epoch with trainer.mixup: its loss is lam x the loss on the labels + (1 - lam) x the
    loss on the partners' labels, of the model's outputs on the mixed inputs."""
    cfg = compose(toy_file, "modality=skeleton_4s", "model=bilstm_4s", "trainer.mixup=0.4")
    data, net, batch, inputs, labels = first_batch(cfg)
    torch.manual_seed(5)
    mixed, partners, lam = mix_batch(inputs, labels, 0.4)
    out = net(mixed)
    want = lam * stream_loss(out, labels, 0.1, 0.5) + (1 - lam) * stream_loss(
        out, partners, 0.1, 0.5
    )
    per = loss_terms(out)
    # the same step inside train_one_epoch (an optimiser with lr 0 leaves the model as it is)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    net.train = lambda mode=True: net  # keep dropout off, as in the reference pass above
    tcfg = cfg.trainer.copy()
    tcfg.precision = "fp32"
    torch.manual_seed(5)
    res = train_one_epoch(net, [batch], opt, sched, "cpu", data.streams, tcfg, 0, show=False)
    assert res["loss"] == pytest.approx(want.item() / per, rel=1e-5)
    # and not the plain loss on the mixed inputs: the partners' labels count
    plain = stream_loss(out, labels, 0.1, 0.5).item() / per
    assert res["loss"] != pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["trainer.mixup=0.2"], "trainer.mixup"),
        (["model.replicas=2", "model.replica_augment=true"], "model.replica_augment"),
        (["trainer.views=2"], "trainer.views"),
    ],
)
def test_distillation_refuses_what_its_teacher_cannot_score(toy_file, tmp_path, overrides, named):
    from skelact.train import train

    cfg = compose(toy_file, "trainer.distill.teacher=some_run", *overrides)
    with pytest.raises(SystemExit, match=named):
        train(cfg, tmp_path / "run")
