"""The Python API and ONNX export on real NTU skeletons: preprocessing, contract, backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import skelact
from skelact.checkpoints import load_checkpoint
from skelact.contract import Contract, ContractError, conform, order_by_activity
from skelact.data.prep.transforms import build_skeleton_pipeline
from skelact.data.sources.ntu_skeleton import load_skeleton
from skelact.layouts import get_layout
from skelact.models.recognizer import build_recognizer
from tests.conftest import shared_data, train_toy_checkpoint


@pytest.fixture(scope="module")
def ntu_bodies() -> dict[str, np.ndarray]:
    """The 4 real NTU files, 1 body each: name -> (1, T, 25, 3)."""
    files = sorted(shared_data("ntu", "skeletons").glob("*.skeleton"))
    return {f.stem: load_skeleton(f, max_bodies=1) for f in files}


@pytest.fixture(scope="module")
def two_person_ckpt(tmp_path_factory):
    return train_toy_checkpoint(tmp_path_factory.mktemp("ckpt2"), bodies=2)


@pytest.fixture(scope="module")
def fused_ckpt(tmp_path_factory):
    return train_toy_checkpoint(tmp_path_factory.mktemp("fused"), fused=True)


@pytest.fixture(scope="module")
def onnx_file(ntu_ckpt, tmp_path_factory):
    from skelact.export import export_onnx

    return export_onnx(ntu_ckpt, tmp_path_factory.mktemp("onnx") / "model.onnx")


def _by_hand(ckpt_path, kp: np.ndarray) -> np.ndarray:
    """The training code's own path: test pipeline -> network -> softmax averaged over clips."""
    ck = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(ck["config"])
    pipe = build_skeleton_pipeline(get_layout("ntu25"), cfg.data.skeleton, False, 1)
    net = build_recognizer(cfg.model, ["skeleton"], ck["num_classes"], ck["specs"])
    net.load_state_dict(ck["model"])
    x = torch.from_numpy(pipe({"keypoint": kp})["keypoint"])
    with torch.no_grad():
        return torch.softmax(net.eval()({"skeleton": x})["logits"], -1).mean(0).numpy()


def test_predict_applies_the_checkpoints_preprocessing(ntu_ckpt, ntu_bodies):
    model = skelact.load(ntu_ckpt.parent.parent)  # a run directory: its checkpoints/last.pt
    assert model.source == str(ntu_ckpt)
    kp = ntu_bodies["S001C001P001R001A001"]
    r = model.predict(kp)
    np.testing.assert_allclose(r.probs, _by_hand(ntu_ckpt, kp), atol=1e-6)
    assert r.probs.shape == (6,) and abs(r.probs.sum() - 1) < 1e-5
    top = r.topk(3)
    assert [p for _, _, p in top] == sorted((p for _, _, p in top), reverse=True)
    assert top[0] == (r.label, r.name, r.prob) and r.name == f"class{r.label}"
    # one attention weight per sampled frame (clip_len 16), inside the 103 frames, in order
    assert r.attention.shape == (16,) and abs(r.attention.sum() - 1) < 1e-5
    assert 0 <= r.frames[0] < r.frames[-1] < 103 and np.all(np.diff(r.frames) > 0)
    # a sample dict (an annotation file's entry) gives the same answer
    same = model.predict({"frame_dir": "x", "keypoint": kp, "total_frames": 103})
    np.testing.assert_array_equal(same.probs, r.probs)


def test_contract_refuses_what_the_model_cannot_read(ntu_ckpt, ntu_bodies, tmp_path):
    model = skelact.load(ntu_ckpt)
    c = model.contract
    assert (c.layout, c.num_bodies, c.num_joints, c.coords) == ("ntu25", 1, 25, 3)
    assert c.skeleton["clip_len"] == 16 and c.streams["skeleton"]["channels"] == 9
    kp = ntu_bodies["S002C001P003R001A003"]
    with pytest.raises(ContractError, match=r"33 joints per body.*'ntu25' has 25"):
        model.predict(np.zeros((1, 20, 33, 3), np.float32) + 1)
    with pytest.raises(ContractError, match=r"2 coordinates per joint.*reads 3"):
        model.predict(kp[..., :2])
    with pytest.raises(ContractError, match=r"layout 'kinect20'.*trained on 'ntu25'"):
        model.predict(kp, layout="kinect20")
    with pytest.raises(ContractError, match="no frames"):
        model.predict(kp[:, :0])
    # live: refused before a reader thread or MediaPipe starts (a later failure left both)
    with pytest.raises(ValueError, match="live window must be a number of seconds > 0, got 0"):
        model.stream("clip.avi", window=0)
    with pytest.raises(ValueError, match="live every must be a number of seconds > 0, got -1"):
        model.stream("clip.avi", every=-1)
    with pytest.raises(TypeError, match="live source must be .* got ndarray"):
        model.stream(kp)
    with pytest.raises(ContractError, match='clip7: a sample dict needs its "keypoint"'):
        model.predict({"frame_dir": "clip7", "kp": kp})
    # a store's sample as it is (a Mapping, not a dict: it was taken for keypoints)
    from skelact.data.formats.annotations import open_annotations, save_annotations

    store = open_annotations(save_annotations(
        {"split": {"a": ["clip9"]}, "annotations": [
            {"frame_dir": "clip9", "label": 0, "total_frames": kp.shape[1], "keypoint": kp}
        ]}, tmp_path / "one.store"))  # fmt: skip
    assert not isinstance(store[0], dict)
    np.testing.assert_array_equal(model.predict(store[0]).probs, model.predict(kp).probs)
    for k in (0, -1, 2.5, "3"):  # [:k] would give all but one class, or a TypeError
        with pytest.raises(ValueError, match="topk: k must be an integer >= 1"):
            model.predict(kp).topk(k)
    holed = kp.copy()
    holed[0, 5, 7, 1] = np.nan  # one joint: the answer would look normal, and be made up
    with pytest.raises(ContractError, match=r"1 non-finite coordinate.*frame 5, joint 7"):
        model.predict(holed)
    with pytest.raises(ContractError, match=r"\d+ non-finite coordinate.*as zeros"):
        model.predict(np.full((1, 5, 25, 3), np.inf, np.float32))
    # finite in float64, inf in float32: the torch model gave NaN probabilities under a label
    huge = kp.astype(np.float64)
    huge[0, 5, 3, 0] = 1e300
    with pytest.raises(ContractError, match=r"1 non-finite coordinate.*frame 5, joint 3"):
        model.predict(huge)
    # nobody in any frame: a confident label before (live and timelines skip such windows)
    with pytest.raises(ContractError, match="every coordinate is zero: no body in any frame"):
        model.predict(np.zeros((1, 40, 25, 3), np.float32))
    # a torch tensor of any float dtype gives numpy's answer (bfloat16 was torch's TypeError);
    # complex numbers lost their imaginary part with a warning, text reached the model
    ref = model.predict(kp).probs
    np.testing.assert_allclose(model.predict(torch.from_numpy(kp)).probs, ref, rtol=1e-6)
    bf = torch.from_numpy(kp).bfloat16()  # its float32 copy is what the model must see
    np.testing.assert_allclose(
        model.predict(bf).probs, model.predict(bf.float().numpy()).probs, rtol=1e-6
    )
    with pytest.raises(ContractError, match="keypoints must be real numbers, got dtype complex"):
        model.predict(kp.astype(np.complex64))
    with pytest.raises(ContractError, match="keypoints must be real numbers, got dtype <U"):
        model.predict(np.full((1, 5, 25, 3), "1"))
    # a second body beyond a one-person contract is dropped: the answer is body 0's
    two = np.concatenate([kp[:, :82], ntu_bodies["S001C001P001R001A011"]])
    np.testing.assert_array_equal(model.predict(two).probs, model.predict(kp[:, :82]).probs)
    # ... unless body 1 is the more active one (SBU lists person A first, whoever acts)
    still = np.repeat(kp[:, :1, :, :], 82, 1)
    np.testing.assert_array_equal(conform(np.concatenate([still, kp[:, :82]]), c), kp[:, :82])


def test_two_person_contract_pads_and_orders_by_activity(two_person_ckpt, ntu_bodies):
    model = skelact.load(two_person_ckpt)
    assert model.contract.num_bodies == 2
    kp = ntu_bodies["S001C001P001R001A001"]
    padded = conform(kp, model.contract)
    assert padded.shape == (2, 103, 25, 3) and not padded[1].any()
    # a still false detection next to the real, moving person: the person ranks first
    ghost = np.repeat(kp[:, :1] + np.float32([1.5, 0, 0]), 103, 1)
    assert order_by_activity(np.concatenate([ghost, kp])).tolist() == [1, 0]
    assert order_by_activity(np.concatenate([kp, ghost])).tolist() == [0, 1]


def test_contract_survives_a_round_trip_through_json(ntu_ckpt):
    c = Contract.from_checkpoint(load_checkpoint(ntu_ckpt))
    assert Contract.from_json(c.to_json()) == c


def test_onnx_matches_torch_on_real_skeletons_with_dynamic_batch(ntu_ckpt, onnx_file, ntu_bodies):
    import onnx

    torch_model, ort_model = skelact.load(ntu_ckpt), skelact.load(onnx_file)
    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert meta["layout"] == "ntu25" and meta["clip_len"] == "16"
    assert meta["class_names"] == '["class0", "class1", "class2", "class3", "class4", "class5"]'
    assert ort_model.contract == torch_model.contract
    # batches of 5 (one sample's test clips), 20 (all four files) and 1
    x = np.concatenate([torch_model.inputs(kp)[0]["skeleton"] for kp in ntu_bodies.values()])
    x[2, :, 4:9] = 0  # nobody in 5 frames of one clip: the attention masks them
    for batch in (x[:5], x, x[:1]):
        ref, ref_att = torch_model.backend({"skeleton": batch})
        got, got_att = ort_model.backend({"skeleton": batch})
        assert got.shape == ref.shape == (len(batch), 6)
        assert np.abs(got - ref).max() <= 1e-4
        assert np.abs(got_att["skeleton"] - ref_att["skeleton"]).max() <= 1e-5
    assert np.all(ort_model.backend({"skeleton": x[:5]})[1]["skeleton"][2, 4:9] < 1e-6)
    for kp in ntu_bodies.values():
        np.testing.assert_allclose(ort_model.predict(kp).probs, torch_model.predict(kp).probs,
                                   atol=1e-5)  # fmt: skip


def test_fused_model_exports_with_cached_features(fused_ckpt, ntu_bodies, tmp_path):
    from skelact.export import export_onnx

    torch_model = skelact.load(fused_ckpt)
    skeletons = ["skeleton_joint", "skeleton_bone", "skeleton_jmotion", "skeleton_bmotion",
                 "skeleton_dist"]  # fmt: skip
    assert list(torch_model.contract.streams) == ["rgb", *skeletons]  # rgb + the default 5
    ort_model = skelact.load(export_onnx(fused_ckpt, tmp_path / "fused.onnx"))
    kp = ntu_bodies["S003C001P015R001A034"]
    feats = {"rgb": kp[0, :, :8, 1]}  # (T, 8) features, as the checkpoint was trained on
    a, b = torch_model.predict(kp, feats), ort_model.predict(kp, feats)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
    inputs = torch_model.inputs(kp, feats)[0]
    assert inputs["rgb"].shape == (5, 8, 8) and inputs["skeleton_joint"].shape == (5, 1, 16, 25, 6)
    # its stand-in features have no index.json: how to compute them from a video is unknown
    with pytest.raises(ContractError, match="'rgb' features cannot be computed from a video"):
        torch_model.features({"video": "clip.mp4", "color_box": np.zeros((1, 4, 4))})
    ref, _ = torch_model.backend(inputs)
    assert np.abs(ort_model.backend(inputs)[0] - ref).max() <= 1e-4
    with pytest.raises(ContractError, match=r"reads 'rgb' features: pass features=model.feat"):
        torch_model.predict(kp)
    # a depth stream's features cannot come from a video: only the cache is offered
    import copy

    as_depth = copy.copy(torch_model)
    as_depth.contract = c = copy.deepcopy(torch_model.contract)
    c.frames, c.streams["depth"] = {"depth": c.frames["rgb"]}, c.streams.pop("rgb")
    with pytest.raises(
        ContractError,
        match=r"reads 'depth' features: pass features=\{'depth': "
        r"its \(T, 8\) array from `skelact prepare features --modality depth`\}$",
    ):
        as_depth.predict(kp)  # fmt: skip


@pytest.mark.parametrize("recipe", ["skeleton_4s", "skeleton_5s"])
def test_multistream_predicts_like_training_and_exports(recipe, ntu_bodies, tmp_path_factory):
    """The default's five skeleton streams (`skeleton_5s`, whose fifth stream has V channels
    per kind of pairwise input) and the four of `skeleton_4s`: each stream gets its own
    channels of one pipeline pass, exactly as in training, and ONNX gives the same scores."""
    from skelact.data.datasets import skeleton_channels
    from skelact.export import export_onnx

    root = tmp_path_factory.mktemp("ms")
    ckpt = train_toy_checkpoint(root, multistream=True, extra=[f"modality={recipe}"])
    model = skelact.load(ckpt)
    c = model.contract
    streams = ["skeleton_joint", "skeleton_bone", "skeleton_jmotion", "skeleton_bmotion"]
    if recipe == "skeleton_5s":
        streams.append("skeleton_dist")
        kinds = list(c.stream_kinds["skeleton_dist"])
        assert kinds[0] == "distance" and kinds[-1] == "partner"
        assert c.streams["skeleton_dist"]["channels"] == 25 * (len(kinds) - 1) + 3
    assert c.skeleton_streams == streams and c.coords == 3
    assert c.stream_kinds["skeleton_bone"] == ["bone", "partner"]
    kp = ntu_bodies["S001C001P001R001A001"]
    r = model.predict(kp)
    ck = load_checkpoint(ckpt)
    cfg = OmegaConf.create(ck["config"])
    union, idx = skeleton_channels(c.stream_kinds, 3, 25)
    pipe = build_skeleton_pipeline(get_layout("ntu25"), cfg.data.skeleton, False, 1, union)
    net = build_recognizer(cfg.model, c.skeleton_streams, ck["num_classes"], ck["specs"])
    net.load_state_dict(ck["model"])
    x = torch.from_numpy(pipe({"keypoint": kp})["keypoint"])
    with torch.no_grad():
        out = net.eval()({s: x[..., i] for s, i in idx.items()})
    want = torch.softmax(out["logits"], -1).mean(0).numpy()
    np.testing.assert_allclose(r.probs, want, atol=1e-6)
    assert r.attention.shape == (16,) and abs(r.attention.sum() - 1) < 1e-5
    onnx = skelact.load(export_onnx(ckpt, tmp_path_factory.mktemp("msx") / "m.onnx"))
    np.testing.assert_allclose(onnx.predict(kp).probs, r.probs, atol=1e-4)


def _tampered(onnx_file, path, edit, dynamic_time: bool = False):
    """A copy of `onnx_file` whose contract metadata `edit` changed (and, with
    `dynamic_time`, whose skeleton input leaves the frame count dynamic)."""
    import json

    import onnx

    proto = onnx.load(str(onnx_file))
    entry = next(e for e in proto.metadata_props if e.key == "skelact_contract")
    contract = json.loads(entry.value)
    edit(contract)
    entry.value = json.dumps(contract)
    if dynamic_time:
        proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "time"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(
    ("edit", "dynamic", "error"),
    [
        (lambda c: c["skeleton"].update(clip_len=10**8), False, "clip_len=100000000 is not a size"),
        (lambda c: c["skeleton"].update(clip_len=10**8), True, "clip_len=100000000 is not a size"),
        (lambda c: c["skeleton"].update(clip_len=12), False, "clip_len=12, but the graph's input"),
        (lambda c: c["skeleton"].update(test_clips=10**8), False, "test_clips=100000000"),
        (lambda c: c["skeleton"].update(test_views=[0.0] * 10**4), False, "test_views=.10000 i"),
        (lambda c: c["skeleton"].update(test_views=[0, "x"]), False, "test_views=\\[0, 'x'\\]"),
        (lambda c: c["skeleton"].update(test_views=[]), False, "metadata's data.skeleton.test_v"),
        (lambda c: c.update(classes=c["classes"][:5]), False, "classes=5, but the graph's logits"),
        (lambda c: c.update(classes="abcdef"), False, "class names are not a list of strings"),
        (lambda c: c["streams"]["skeleton"].update(channels=3), False, "channels=3, but"),
        (lambda c: c["streams"]["skeleton"].update(num_bodies=2), False, "num_bodies=2, but"),
        (lambda c: c.update(streams={"rgb": {"feature_dim": 8}}), False, "graph's inputs"),
        (lambda c: c["skeleton"].pop("clip_len"), False, "incomplete skelact contract"),
    ],
)
def test_onnx_metadata_is_checked_against_the_graph(onnx_file, tmp_path, edit, dynamic, error):
    path = _tampered(onnx_file, tmp_path / "tampered.onnx", edit, dynamic)
    with pytest.raises(ContractError, match=error):
        skelact.load(path)


@pytest.mark.parametrize("views", [[float("nan")], [0.0] * 361, "0"])
def test_a_checkpoint_with_bad_test_views_is_refused_at_load(ntu_ckpt, tmp_path, views):
    ck = load_checkpoint(ntu_ckpt)
    ck["config"]["data"]["skeleton"]["test_views"] = views
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(ContractError, match=r"bad\.pt: the config's data\.skeleton\.test_views"):
        skelact.load(tmp_path / "bad.pt")
    ck["config"]["data"]["skeleton"]["test_views"] = [0, -15.0]
    torch.save(ck, tmp_path / "good.pt")
    assert skelact.load(tmp_path / "good.pt").contract.skeleton["test_views"] == [0, -15.0]


def test_onnx_dynamic_sizes_within_bounds_are_accepted(onnx_file, tmp_path):
    path = _tampered(onnx_file, tmp_path / "dyn.onnx", lambda c: None, dynamic_time=True)
    assert skelact.load(path).contract.skeleton["clip_len"] == 16
    turn = lambda c: c["skeleton"].update(test_views=[0, 15.5])  # noqa: E731
    views = _tampered(onnx_file, tmp_path / "v.onnx", turn)
    assert skelact.load(views).contract.skeleton["test_views"] == [0, 15.5]


def test_a_model_of_a_kinect_layout_is_refused_on_videos_with_the_way_out(ntu_ckpt):
    """A model trained on KARD's or UTD-MHAD's skeletons (openni15, kinect20) cannot take
    MediaPipe's joints: converting a video is refused up front, saying what would work."""
    model = skelact.load(ntu_ckpt)
    model.contract.layout = "openni15"
    words = (
        "the model was trained on layout 'openni15'; skeletons from videos come in mediapipe33 "
        "or ntu25 only: for videos, train on skeletons from `skelact convert` (or NTU's); "
        "keypoints of this layout go to predict()"
    )
    for call in (lambda: model.convert("clip.mp4"), lambda: model.stream("clip.mp4")):
        with pytest.raises(ContractError) as err:
            call()
        assert str(err.value).endswith(words)


def test_a_model_without_a_skeleton_stream_is_refused_by_name(tmp_path):
    """A model of cached features alone (here RGB; `--modality depth` alike) loaded into the
    API, predict or export: an IndexError deep in the contract before; now one refusal at
    load that says what scores it."""
    from skelact.export import export_onnx

    ckpt = train_toy_checkpoint(tmp_path, fused=True, extra=["modality=rgb"])
    with pytest.raises(ContractError, match=r"last.pt: a model of rgb alone, no skeleton stream; "
                       r"predict, the API and export take models with one"):  # fmt: skip
        skelact.load(ckpt)
    with pytest.raises(ContractError, match="no skeleton stream"):
        export_onnx(ckpt, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
