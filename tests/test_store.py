"""The skeleton store: round trips, pyskl pickles in and out, corruption, cache, safety."""

import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from skelact.checkpoints import load_checkpoint, save_checkpoint
from skelact.data.formats.annotations import load_annotations, open_annotations, save_annotations
from skelact.data.formats.pickle_stream import pickle_to_store
from skelact.data.formats.pickles import UnsafePickleError, load_pickle, store_to_pickle
from skelact.data.formats.schema import AnnotationError
from skelact.data.formats.store import SkeletonStore, StoreError
from skelact.data.formats.store_write import StoreWriter
from tests.conftest import shared_data, toy_annotations


def rich_annotations() -> dict:
    """Toy samples with the optional fields of pyskl and skelact files, some on some samples."""
    data = toy_annotations(num_classes=3, per_class=6, frames=30, bodies=2)
    rng = np.random.default_rng(1)
    for i, a in enumerate(data["annotations"]):
        m, t, v, _ = a["keypoint"].shape
        a["keypoint_score"] = rng.random((m, t, v)).astype(np.float16)
        a["color_xy"] = rng.uniform(0, 1920, (m, t, v, 2)).astype(np.float16)
        a["label"] = np.int64(a["label"])  # pyskl stores numpy ints
        a["img_shape"] = (1080, 1920)
        a["modalities"] = ["skeleton", "rgb"] if i % 2 else ["skeleton"]
        if i % 3 == 0:
            a["subject"] = i  # on a third of the samples only
            a["mask"] = np.ones((m, t), bool)
    data["layout"], data["dataset"] = "ntu25", "toy"
    return data


def assert_same(expected: dict, got: dict) -> None:
    assert got["split"] == expected["split"]
    for key in ("classes", "layout", "dataset"):
        assert got.get(key) == expected.get(key)
    assert len(got["annotations"]) == len(expected["annotations"])
    for a, b in zip(expected["annotations"], got["annotations"], strict=True):
        assert sorted(a) == sorted(b), a["frame_dir"]
        for key, value in a.items():
            if isinstance(value, np.ndarray):
                assert b[key].dtype == value.dtype and b[key].shape == value.shape, key
                assert np.array_equal(b[key], value), (a["frame_dir"], key)
            elif isinstance(value, tuple):
                assert list(b[key]) == list(value), key
            else:
                assert b[key] == value, (a["frame_dir"], key)


def test_store_round_trip_is_exact(tmp_path):
    data = rich_annotations()
    path = save_annotations(data, tmp_path / "toy.store")
    assert sorted(p.name for p in path.iterdir()) == ["arrays.bin", "index.npz", "meta.json"]
    assert_same(data, load_annotations(path))
    store = SkeletonStore(path)
    assert len(store) == 18 and store.num_classes() == 3 and store.layout == "ntu25"
    assert list(store.names[store.split("test")]) == data["split"]["test"]
    kp = store[4]["keypoint"]
    assert not kp.flags.writeable  # a read-only view of the map, not a copy
    assert store.shapes("keypoint")[4].tolist() == [2, 30, 25, 3]


def test_writer_streams_and_is_atomic(tmp_path):
    data = toy_annotations(per_class=4)
    out = tmp_path / "s.store"
    with pytest.raises(AnnotationError, match="unknown sample"):
        with StoreWriter(out) as w:
            for a in data["annotations"]:
                w.add(a)
            w.close({"train": ["nope"]})
    assert not out.exists() and not list(tmp_path.iterdir())  # temp folder removed too
    bad = dict(data["annotations"][0], keypoint=np.full((1, 5, 25, 3), np.nan, np.float32))
    with pytest.raises(AnnotationError, match="non-finite"), StoreWriter(out) as w:
        w.add(bad)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pyskl_pickle_in(tmp_path, protocol):
    data = rich_annotations()
    data["annotations"][0]["keypoint"] = np.asfortranarray(data["annotations"][0]["keypoint"])
    if len(data["annotations"]) > 1:  # a permuted view (numpy 2 pickles it with axis_order)
        kp = data["annotations"][1]["keypoint"]
        data["annotations"][1]["keypoint"] = np.ascontiguousarray(
            kp.transpose(1, 0, 2, 3)
        ).transpose(1, 0, 2, 3)
    pkl = tmp_path / "pyskl.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(data, f, protocol=protocol)  # as pyskl / mmaction2 write them
    assert_same(data, load_annotations(pkl))  # in memory, restricted unpickler
    store = pickle_to_store(pkl, tmp_path / "conv.store")  # streaming conversion
    assert_same(data, load_annotations(store))


def test_pyskl_pickle_out_opens_with_plain_pickle(tmp_path):
    data = rich_annotations()
    store = save_annotations(data, tmp_path / "toy.store")
    out = store_to_pickle(store, tmp_path / "out.pkl")
    with open(out, "rb") as f:
        back = pickle.load(f)  # what pyskl does
    assert type(back["annotations"][0]["keypoint"]) is np.ndarray  # not a memmap
    assert_same(data, back)


def test_byte_progress_follows_the_file_being_written(tmp_path, monkeypatch):
    """The bar of store -> pickle (and pickle -> store) shows the file's position, polled
    from a thread, and reaches what was written; the file is what it would be without it."""
    import tqdm

    from skelact.files import byte_progress

    seen = []

    class Bar:
        def __init__(self, total, **kw):
            self.n, self.total = 0, total

        def update(self, k):
            self.n += k
            seen.append(self.n)

        def close(self):
            seen.append(("closed", self.n))

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    with open(tmp_path / "f.bin", "wb") as f, byte_progress(f, 3000, "writing", every=0.01):
        for _ in range(3):
            f.write(b"x" * 1000)
            f.flush()
            time.sleep(0.2)
    positions = [n for n in seen if not isinstance(n, tuple)]
    assert positions == sorted(positions) and {1000, 2000} <= set(positions)  # while writing
    assert seen[-1] == ("closed", 3000)


def test_repack_cli_both_ways(tmp_path):
    data = rich_annotations()
    pkl = save_annotations(data, tmp_path / "a.pkl")
    run = [sys.executable, "-m", "skelact.cli", "repack"]
    subprocess.run([*run, str(pkl), str(tmp_path / "b.store")], check=True, capture_output=True)
    subprocess.run([*run, str(tmp_path / "b.store"), str(tmp_path / "c.pkl")], check=True)
    assert_same(data, load_annotations(tmp_path / "c.pkl"))


def test_repack_into_another_layout_moves_every_per_joint_field_by_name(tmp_path):
    """`skelact repack SRC DST --layout L`: each joint of L takes the file's joint of the same
    name or alias (Kinect v1's shoulder centre is OpenNI's neck, its spine OpenNI's torso),
    in keypoints, scores and pixel positions alike; the rest of the file is unchanged. A
    layout the file cannot fill is refused, naming the joints."""
    from skelact.layouts import KINECT20, OPENNI15

    data = rich_annotations()
    for a in data["annotations"]:  # 20 joints: x of joint v is v, so the order shows
        m, t = a["keypoint"].shape[:2]
        a["keypoint"] = np.broadcast_to(np.arange(20.0, dtype=np.float32)[:, None], (m, t, 20, 3))
        a["keypoint_score"] = a["keypoint_score"][:, :, :20]
        a["color_xy"] = a["color_xy"][:, :, :20]
    data["layout"] = "kinect20"
    src = save_annotations(data, tmp_path / "k20.store")
    run = [sys.executable, "-m", "skelact.cli", "repack", str(src)]
    res = subprocess.run([*run, str(tmp_path / "o15.pkl"), "--layout", "openni15"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "wrote" in res.stdout and "kinect20 -> openni15" in res.stdout
    back = load_annotations(tmp_path / "o15.pkl")
    assert back["layout"] == "openni15" and back["split"] == data["split"]
    taken = [KINECT20.joints[int(x)] for x in back["annotations"][0]["keypoint"][0, 0, :, 0]]
    assert taken[:3] == ["head", "shoulder_center", "spine"]
    assert taken[3:] == [j for j in OPENNI15.joints[3:]]  # the same names for the limbs
    index = [KINECT20.joints.index(j) for j in taken]
    for a, b in zip(data["annotations"], back["annotations"], strict=True):
        assert b["frame_dir"] == a["frame_dir"] and b["label"] == a["label"]
        for key in ("keypoint", "keypoint_score", "color_xy"):
            np.testing.assert_array_equal(b[key], np.asarray(a[key])[:, :, index])
    res = subprocess.run([*run, str(tmp_path / "x.store"), "--layout", "ntu25"],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode != 0 and "no joint for neck, left_hand_tip" in res.stderr
    assert not (tmp_path / "x.store").exists()


def test_merge_keeps_each_files_classes_samples_and_splits_apart(tmp_path):
    """`skelact merge A B --layout L --out M`: A's classes come first, B's after them with
    their labels offset; samples and splits are named by file; train / val split every
    sample, the held-out share of each file in val, drawn the same whatever the files' order;
    B's joints moved into L by name. Files of different layouts without --layout, of unnamed
    joints, or of the same name are refused."""
    from skelact.data.formats.annotations import merge_annotations
    from skelact.layouts import KINECT20, OPENNI15, joint_map

    a = toy_annotations(num_classes=2, per_class=8, joints=15, seed=1)
    a["layout"] = "openni15"
    b = toy_annotations(num_classes=3, per_class=4, joints=20, bodies=2, seed=2)
    b["layout"], b["classes"] = "kinect20", ["wave", "kick", "sit"]
    save_annotations(a, tmp_path / "sbu.store")
    save_annotations(b, tmp_path / "ucla.pkl")
    run = [sys.executable, "-m", "skelact.cli", "merge", str(tmp_path / "sbu.store")]
    res = subprocess.run([*run, str(tmp_path / "ucla.pkl"), "--layout", "openni15",
                          "--holdout", "0.25", "--out", str(tmp_path / "m.store")],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert "28 samples, 5 classes" in res.stdout and "(labels from 2), 3 held out" in res.stdout
    m = load_annotations(tmp_path / "m.store")
    assert m["layout"] == "openni15" and m["dataset"] == "merged"
    assert m["classes"] == ["sbu: class0", "sbu: class1", "ucla: wave", "ucla: kick", "ucla: sit"]
    names = [x["frame_dir"] for x in m["annotations"]]
    assert sorted(m["split"]["train"] + m["split"]["val"]) == sorted(names)
    assert sum(n.startswith("sbu/") for n in m["split"]["val"]) == 4  # 0.25 of 16
    assert sum(n.startswith("ucla/") for n in m["split"]["val"]) == 3  # 0.25 of 12
    assert m["split"]["ucla/test"] == [f"ucla/{n}" for n in b["split"]["test"]]
    assert m["split"]["sbu/train"] == [f"sbu/{n}" for n in a["split"]["train"]]
    index = joint_map(KINECT20, OPENNI15)
    got = {x["frame_dir"]: x for x in m["annotations"]}
    for x in a["annotations"]:
        y = got[f"sbu/{x['frame_dir']}"]
        assert y["label"] == x["label"]
        np.testing.assert_array_equal(y["keypoint"], x["keypoint"])
    for x in b["annotations"]:
        y = got[f"ucla/{x['frame_dir']}"]
        assert y["label"] == x["label"] + 2
        np.testing.assert_array_equal(y["keypoint"], x["keypoint"][:, :, index])
    val = merge_annotations([tmp_path / "sbu.store", tmp_path / "m.store"], tmp_path / "n.store",
                            layout="openni15", holdout=0.25, seed=5)["val"]  # fmt: skip
    assert val == 4 + 7
    pair = [tmp_path / "m.store", tmp_path / "sbu.store"]
    swapped = merge_annotations(pair, tmp_path / "o.store", layout="openni15", holdout=0.25, seed=5)
    assert swapped["val"] == val
    first, second = (load_annotations(tmp_path / f)["split"]["val"] for f in ("n.store", "o.store"))
    assert sorted(first) == sorted(second)  # each file's draw, whatever the order
    as_pickle = merge_annotations(pair, tmp_path / "o.pkl", layout="openni15", holdout=0.25, seed=5)
    assert (tmp_path / "o.pkl").is_file() and not (tmp_path / "o.pkl.store").exists()
    pickled = load_annotations(tmp_path / "o.pkl")
    assert as_pickle["samples"] == len(pickled["annotations"]) == swapped["samples"] == 28 + 16
    assert sorted(pickled["split"]["val"]) == sorted(second)
    with pytest.raises(ValueError, match=r"different joint layouts: .*sbu.store \(openni15\), "
                       r".*ucla.pkl \(kinect20\); give --layout"):  # fmt: skip
        merge_annotations([tmp_path / "sbu.store", tmp_path / "ucla.pkl"], tmp_path / "x.store")
    save_annotations({**a, "layout": "generic"}, tmp_path / "g.store")
    with pytest.raises(ValueError, match=r"g\.store: its joints have no names .* into openni15"):
        merge_annotations([tmp_path / "g.store", tmp_path / "ucla.pkl"], tmp_path / "x.store",
                          layout="openni15")  # fmt: skip
    save_annotations(a, tmp_path / "other" / "sbu.pkl")
    with pytest.raises(ValueError, match="names must differ"):
        merge_annotations([tmp_path / "sbu.store", tmp_path / "other" / "sbu.pkl"], tmp_path / "y")
    assert not (tmp_path / "x.store").exists() and not (tmp_path / "y").exists()


def test_truncated_or_corrupt_store_names_the_file(tmp_path):
    path = save_annotations(toy_annotations(per_class=4), tmp_path / "t.store")
    blob = path / "arrays.bin"
    raw = bytearray(blob.read_bytes())
    blob.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(StoreError, match=r"arrays\.bin.*truncated"):
        SkeletonStore(path)
    raw[1000] ^= 0xFF  # sample 0's keypoints, same length
    blob.write_bytes(raw)
    store = SkeletonStore(path)
    with pytest.raises(StoreError, match=r"arrays\.bin.*sample 0 .*checksum"):
        store[0]["keypoint"]  # arrays are read (and checked) when used
    assert store[1]["keypoint"].shape == (1, 40, 25, 3)  # the others still read
    (path / "index.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(StoreError, match=r"index\.npz"):
        SkeletonStore(path)
    (path / "meta.json").write_text("{")
    with pytest.raises(StoreError, match=r"meta\.json"):
        SkeletonStore(path)


def test_cache_converts_once_and_rebuilds_a_changed_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("SKELACT_CACHE", str(tmp_path / "cache"))
    data = toy_annotations(per_class=4)
    pkl = save_annotations(data, tmp_path / "a.pkl")
    first = open_annotations(pkl)
    made = (first.path / "meta.json").stat().st_mtime_ns
    again = open_annotations(pkl)
    assert again.path == first.path and (again.path / "meta.json").stat().st_mtime_ns == made
    data["annotations"][0]["label"] = 2
    save_annotations(data, pkl)
    os.utime(pkl, ns=(made + 10**9, made + 10**9))  # a new mtime even on coarse clocks
    rebuilt = open_annotations(pkl)
    assert rebuilt.path == first.path and int(rebuilt.labels[0]) == 2
    (rebuilt.path / "arrays.bin").write_bytes(b"")  # a damaged cache is rebuilt too
    assert int(open_annotations(pkl).labels[0]) == 2


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    data = toy_annotations(per_class=2)
    data["annotations"][0]["extra"] = _Payload(marker)
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps(data))
    for load in (load_pickle, load_annotations, open_annotations):
        with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*refused.*system"):
            load(pkl)
    assert not marker.exists()


def test_malicious_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "x": _Payload(marker)}, path)
    with pytest.raises(RuntimeError, match=r"evil\.pt"):
        load_checkpoint(path)
    assert not marker.exists()
    save_checkpoint({"model": {"w": torch.ones(2)}, "classes": ["a"], "epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 3  # plain contents load


def test_prepare_ntu_store_equals_its_pickle(tmp_path):
    from skelact.data.sources.ntu_prepare import prepare_ntu

    skeletons = shared_data("ntu", "skeletons")
    prepare_ntu(skeletons, tmp_path / "ntu.store", "ntu120")
    prepare_ntu(skeletons, tmp_path / "ntu.pkl", "ntu120")
    a, b = load_annotations(tmp_path / "ntu.pkl"), load_annotations(tmp_path / "ntu.store")
    b["report"].pop("seconds"), a["report"].pop("seconds")
    b["report"].pop("output"), a["report"].pop("output")
    assert a["report"] == b["report"] and a["report"]["samples"] == 4
    assert_same(a, b)


def test_training_from_store_is_deterministic_and_matches_the_pickle(tmp_path):
    """Same seed, same result: from the pickle (cached store) with no workers, and from a store
    with 2 persistent workers (the epoch travels with the sampler's indices)."""
    import pandas as pd

    from skelact.config import compose_config
    from skelact.train import train

    data = toy_annotations(num_classes=3, per_class=16, frames=30)
    pkl = save_annotations(data, tmp_path / "toy.pkl")
    store = save_annotations(data, tmp_path / "toy.store")
    common = ["data.train_split=train", "data.test_split=test", "trainer.progress=false",
              "data.skeleton.clip_len=8", "data.skeleton.test_clips=2", "model.core.hidden=16",
              "model.skeleton.hidden=16", "model.skeleton.embed=16", "trainer.epochs=3",
              "trainer.threads=1", "trainer.batch_size=8"]  # fmt: skip
    runs = {}
    for name, ann, workers in (("pkl", pkl, 0), ("store", store, 2)):
        cfg = compose_config([f"data.ann_file={ann}", f"trainer.num_workers={workers}", *common])
        metrics = train(cfg, tmp_path / name)
        log = pd.read_csv(tmp_path / name / "train_log.csv")
        preds = pd.read_csv(tmp_path / name / "predictions.csv")
        runs[name] = (log["loss"].tolist(), metrics["top1"], preds["prob"].tolist())
    assert runs["pkl"] == runs["store"]
    assert len(set(runs["pkl"][0])) == 3  # three distinct epoch losses were compared


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_conversion_memory_does_not_grow_with_the_arrays(tmp_path, protocol):
    """24 MB of arrays: the conversion's Python allocations stay far below the file (the C
    unpickler's memo kept every array's bytes, 1.2-1.8x the file)."""
    import tracemalloc

    data = toy_annotations(num_classes=2, per_class=200, frames=100, bodies=2)  # 400 x 60 KB
    data["report"] = "é" * 300 + "\u20ac"  # long text that is not latin-1 bytes
    data["dataset"] = "x" * 1000  # long latin-1 text that stays text
    pkl = tmp_path / "big.pkl"
    pkl.write_bytes(pickle.dumps(data, protocol=protocol))
    assert pkl.stat().st_size > 24e6
    tracemalloc.start()
    try:
        store = pickle_to_store(pkl, tmp_path / "big.store")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6, peak
    assert_same(data, load_annotations(store))
    assert load_annotations(store)["report"] == data["report"]


def test_pickle_frame_larger_than_pickle_writes_is_refused(tmp_path):
    import struct

    pkl = tmp_path / "frame.pkl"
    pkl.write_bytes(b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"}.")
    with pytest.raises(AnnotationError, match=r"frame\.pkl: a pickle frame of 1099511627776"):
        pickle_to_store(pkl, tmp_path / "s.store")


def test_a_store_prepared_again_while_in_use(tmp_path):
    """A store replaced under a running training (prepare again, or a pickle converted again):
    the evaluation's DataLoader workers, forked later, mapped the new arrays.bin with the old
    index and failed as "corrupt". A forked worker now reads the files the index describes;
    a spawned one (the store pickled) is refused, naming the replacement."""
    import multiprocessing

    from skelact.data.formats.store import SkeletonStore, StoreError

    path = tmp_path / "toy.store"
    save_annotations(toy_annotations(num_classes=2, per_class=4, seed=0), path)
    store = SkeletonStore(path)
    old = np.array(store[3]["keypoint"])
    save_annotations(toy_annotations(num_classes=2, per_class=4, seed=1), path)  # replaced
    assert not np.array_equal(np.array(SkeletonStore(path)[3]["keypoint"]), old)
    ctx = multiprocessing.get_context("fork")  # as the DataLoader's workers are started
    queue = ctx.Queue()
    child = ctx.Process(target=_put_keypoint, args=(store, 3, queue))
    child.start()
    got = queue.get(timeout=60)
    child.join()
    np.testing.assert_array_equal(got, old)
    with pytest.raises(StoreError, match="toy.store: the store was replaced"):
        pickle.loads(pickle.dumps(store))


def _put_keypoint(store, i, queue):
    queue.put(np.array(store[i]["keypoint"]))
