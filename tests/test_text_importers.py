"""SBU, KARD and MSR DailyActivity3D importers on the real files: counts, splits, labels, values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from skelact.cli import build_parser
from skelact.data.formats.annotations import load_annotations
from skelact.data.prep.transforms import PadBodies
from skelact.data.sources.ntu_bodies import activity
from skelact.data.sources.text_importers import (
    KARD_CLASSES,
    MSR_DAILY_CLASSES,
    SBU_CLASSES,
    SBU_FOLDS,
    prepare_kard,
    prepare_msr_daily,
    prepare_sbu,
)
from skelact.layouts import KINECT20, OPENNI15, get_layout
from tests.conftest import SHARED_DATA, shared_data

J = OPENNI15.index


def _prepare(tmp_path_factory, name, func):
    shared_data(name)
    out = tmp_path_factory.mktemp(name) / f"{name}.pkl"
    report = func(SHARED_DATA / name, out, verbose=False)
    return report, load_annotations(out)


@pytest.fixture(scope="module")
def sbu(tmp_path_factory):
    return _prepare(tmp_path_factory, "sbu", prepare_sbu)


@pytest.fixture(scope="module")
def kard(tmp_path_factory):
    return _prepare(tmp_path_factory, "kard", prepare_kard)


@pytest.fixture(scope="module")
def msr(tmp_path_factory):
    return _prepare(tmp_path_factory, "msr_daily3d", prepare_msr_daily)


def by_name(data, name):
    return next(a for a in data["annotations"] if a["frame_dir"] == name)


def members(data, split, key):
    names = set(data["split"][split])
    return {a[key] for a in data["annotations"] if a["frame_dir"] in names}


def test_openni15_layout():
    assert get_layout("openni15", 15) is OPENNI15 and OPENNI15.named
    # every bone joins a joint to a neighbour on the body: 14 bones, torso is the root
    assert len(OPENNI15.bones()) == 14 and OPENNI15.parents[J("torso")] == -1
    assert OPENNI15.parents[J("left_hand")] == J("left_elbow")
    assert OPENNI15.parents[J("right_foot")] == J("right_knee")


def test_sbu_counts_folds_and_labels(sbu):
    report, data = sbu
    assert report["samples"] == 282 and report["dropped"]["count"] == 0
    assert data["layout"] == "openni15" and data["classes"] == list(SBU_CLASSES)
    test_sizes = [len(data["split"][f"fold{k}_test"]) for k in range(1, 6)]
    assert test_sizes == [55, 52, 56, 54, 65]  # the dataset README's fold sizes
    labels = np.bincount([a["label"] for a in data["annotations"]])
    assert labels.tolist() == [42, 43, 40, 41, 18, 21, 39, 38]
    for k in range(1, 6):
        train, test = set(data["split"][f"fold{k}_train"]), set(data["split"][f"fold{k}_test"])
        dev_t, dev_v = (
            set(data["split"][f"fold{k}_dev_train"]),
            set(data["split"][f"fold{k}_dev_val"]),
        )
        assert not train & test and len(train | test) == 282
        assert dev_t | dev_v == train and not dev_t & dev_v
        assert members(data, f"fold{k}_test", "set") == set(SBU_FOLDS[k - 1])
        assert members(data, f"fold{k}_dev_val", "set") == set(SBU_FOLDS[k % 5])
    assert (report["frames"]["min"], report["frames"]["max"]) == (10, 46)


def test_sbu_values_from_file(sbu):
    _, data = sbu
    ann = by_name(data, "s01s02_a01_001")
    kp = ann["keypoint"]  # (2, T, 15, 3)
    path = SHARED_DATA / "sbu" / "s01s02" / "01" / "001" / "skeleton_pos.txt"
    first = np.loadtxt(path, delimiter=",")[0]
    assert kp.shape[:1] + kp.shape[2:] == (2, 15, 3) and ann["first_frame"] == int(first[0]) == 55
    # person A's head: x 0.21496 y 0.32665 z 1.7849 (normalised) -> metres
    head = [(1280 - 2560 * 0.21496) / 1000, (960 - 1920 * 0.32665) / 1000, 1.7849 * 1.28]
    np.testing.assert_allclose(kp[0, 0, J("head")], head, rtol=1e-5)
    # person B is the 16th joint of the line
    np.testing.assert_allclose(kp[1, 0, J("head"), 2], first[1 + 45 + 2] * 1.28, rtol=1e-5)
    # de-normalised y points up: head above torso above feet, in metres
    y = kp[..., 1].mean(axis=(0, 1))
    assert (
        y[J("head")] > y[J("torso")] > y[J("left_foot")]
        and 1.0 < y[J("head")] - y[J("left_foot")] < 2.0
    )


def test_kard_counts_splits_and_values(kard):
    report, data = kard
    counts = {k: len(v) for k, v in data["split"].items()}
    assert counts == {
        "xsub_train": 270,
        "xsub_test": 270,
        "xsub_dev_train": 162,
        "xsub_dev_val": 108,
    }
    assert members(data, "xsub_train", "subject") == {1, 2, 3, 4, 5}
    assert members(data, "xsub_dev_val", "subject") == {4, 5}
    assert data["layout"] == "openni15" and len(data["classes"]) == len(KARD_CLASSES) == 18
    assert np.bincount([a["label"] for a in data["annotations"]]).tolist() == [30] * 18
    assert report["dropped"]["count"] == 0 and report["frames"]["min"] == 42
    ann = by_name(data, "a14_s06_e02")
    assert ann["label"] == 13 and ann["subject"] == 6 and ann["take"] == 2
    # first frame: line 1 head (659.92084 709.5745 2686.4731) mm, line 3 right shoulder
    np.testing.assert_allclose(
        ann["keypoint"][0, 0, J("head")], [-0.65992084, 0.7095745, 2.6864731]
    )
    np.testing.assert_allclose(ann["keypoint"][0, 0, J("right_shoulder"), 0], -0.4782989)
    # after negating x the person's left is at -x, as in NTU and MSR
    x = np.concatenate([a["keypoint"][0] for a in data["annotations"]])
    assert (x[:, J("left_shoulder"), 0] < x[:, J("right_shoulder"), 0]).mean() > 0.95


def test_msr_counts_repairs_and_values(msr):
    report, data = msr
    counts = {k: len(v) for k, v in data["split"].items()}
    assert counts == {"xsub_train": 160, "xsub_test": 160, "xsub_dev_train": 96, "xsub_dev_val": 64}
    assert members(data, "xsub_test", "subject") == {2, 4, 6, 8, 10}
    assert members(data, "xsub_dev_val", "subject") == {7, 9}
    assert data["layout"] == "kinect20" and data["classes"] == list(MSR_DAILY_CLASSES)
    assert np.bincount([a["label"] for a in data["annotations"]]).tolist() == [20] * 16
    # exactly the README's NaN and zero frames are dropped (0-based frame indices)
    assert report["failed_frames_dropped"] == {
        "a13_s06_e01": [122, 123, 124, 125],
        "a13_s06_e02": [61],
        "a13_s08_e02": [41],
        "a13_s09_e02": [83],
    }
    assert by_name(data, "a13_s08_e02")["total_frames"] == 41
    for ann in data["annotations"]:
        assert np.isfinite(ann["keypoint"]).all()
    ann = by_name(data, "a08_s03_e01")
    assert ann["label"] == 7 and ann["keypoint"].shape[2:] == (20, 3)
    np.testing.assert_allclose(
        ann["keypoint"][0, 0, :2], [[0.253, -0.380, 2.552], [0.252, -0.343, 2.595]]
    )
    x = np.concatenate([a["keypoint"][0] for a in data["annotations"]])
    left, right = KINECT20.index("left_shoulder"), KINECT20.index("right_shoulder")
    assert (x[:, left, 0] < x[:, right, 0]).mean() > 0.95


@pytest.mark.parametrize("source", ["sbu", "kard", "msr-daily"])
def test_cli_prepare_parses(source):
    args = build_parser().parse_args(["prepare", source, "ROOT", "--out", "x.pkl"])
    assert (args.source, args.root, args.out) == (source, "ROOT", "x.pkl")


def test_sbu_one_person_models_keep_the_more_active_person(sbu):
    """SBU lists person A first; a model with one body keeps the more active of the two."""
    _, data = sbu
    keep = PadBodies(1)
    b_first = 0
    for ann in data["annotations"]:
        kp = ann["keypoint"]  # (2, T, 15, 3): A, B
        a, b = (activity(kp[m]) for m in range(2))
        kept = keep({"keypoint": kp})["keypoint"]
        np.testing.assert_array_equal(kept, kp[[1 if b > a else 0]])
        b_first += b > a
    assert b_first == 130  # of 282: B moves more in nearly half the takes
    # two-person models keep the dataset's order: A, B
    kp = data["annotations"][0]["keypoint"]
    np.testing.assert_array_equal(PadBodies(2)({"keypoint": kp})["keypoint"], kp)


def test_names_come_from_the_numbers_and_a_bad_file_is_named_by_its_path(tmp_path):
    """KARD/MSR samples are named aAA_sSS_eEE by their numbers: a file named a1_s1_e1_... is
    a01_s01_e01 (the name was cut at 11 characters: a1_s1_e1_re), and one that repeats another
    file's sample is dropped naming both, the others kept; an SBU file (all are
    skeleton_pos.txt) is named by its path in the set."""
    import shutil

    shared_data("kard")
    shared_data("sbu")
    kard = tmp_path / "kard"
    kard.mkdir()
    src = SHARED_DATA / "kard"
    shutil.copy(src / "a01_s01_e01_realworld.txt", kard / "a1_s1_e1_realworld.txt")
    shutil.copy(src / "a01_s01_e02_realworld.txt", kard / "a001_s01_e01_realworld.txt")
    shutil.copy(src / "a02_s06_e01_realworld.txt", kard / "a02_s06_e01_realworld.txt")
    report = prepare_kard(kard, tmp_path / "k.pkl", verbose=False)
    data = load_annotations(tmp_path / "k.pkl")
    assert sorted(a["frame_dir"] for a in data["annotations"]) == ["a01_s01_e01", "a02_s06_e01"]
    want = np.loadtxt(src / "a01_s01_e02_realworld.txt")[:15, 2] / 1000  # sorted first: a001
    assert np.isclose(by_name(data, "a01_s01_e01")["keypoint"][0, 0, 0, 2], want[0])
    assert report["dropped"]["reasons"] == {
        "duplicate": ["a1_s1_e1_realworld.txt: names the sample a01_s01_e01, as "
                      "a001_s01_e01_realworld.txt does (kept)"]
    }  # fmt: skip

    sbu = tmp_path / "sbu"
    shutil.copytree(SHARED_DATA / "sbu" / "s01s02", sbu / "s01s02")
    (sbu / "s01s02" / "03" / "001" / "skeleton_pos.txt").write_text("1,2,3\n")
    report = prepare_sbu(sbu, tmp_path / "s.pkl", verbose=False)
    assert report["dropped"]["reasons"]["unreadable"] == [
        "s01s02/03/001/skeleton_pos.txt: 3 values per line, want 91"
    ]


def test_a_binary_or_empty_text_file_gets_a_short_reason(tmp_path):
    """Random bytes in a KARD file: the reason was the repr of numpy's decoding error, the
    whole file in it (11 KB on one line); an empty file printed numpy's warning too."""
    from skelact.data.sources.importing import SkeletonFileError
    from skelact.data.sources.text_importers import read_kard

    bad = tmp_path / "a02_s01_e01_realworld.txt"
    bad.write_bytes(b"4eg:" + bytes(range(0xE8, 0x100)) * 100)
    with pytest.raises(SkeletonFileError, match=r"^a02_s01_e01_realworld.txt: not text \(byte "
                       r"0xe8 at offset 4\)$"):  # fmt: skip
        read_kard(bad)
    bad.write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's UserWarning would fail the test
        with pytest.raises(SkeletonFileError, match="empty: no numbers in the file"):
            read_kard(bad)
