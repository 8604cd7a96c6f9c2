"""N-UCLA and UTD-MHAD importers: real-file counts and values, joint order, degenerate files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from skelact.data.formats.annotations import load_annotations
from skelact.data.sources.importers import (
    NUCLA_CLASSES,
    UTD_MHAD_CLASSES,
    prepare_nucla,
    prepare_utd_mhad,
    read_utd_mhad_mat,
)
from skelact.data.sources.importing import SkeletonFileError
from skelact.layouts import KINECT20
from tests.conftest import SHARED_DATA, shared_data

NUCLA = SHARED_DATA / "nw_ucla"
UTD = SHARED_DATA / "utd_mhad"
J = KINECT20.index


@pytest.fixture(scope="module")
def nucla(tmp_path_factory):
    shared_data("nw_ucla", "all_sqe")
    out = tmp_path_factory.mktemp("nucla") / "nucla.pkl"
    report = prepare_nucla(NUCLA, out, verbose=False)
    return report, load_annotations(out)


@pytest.fixture(scope="module")
def utd(tmp_path_factory):
    shared_data("utd_mhad", "Skeleton")
    out = tmp_path_factory.mktemp("utd") / "utd.pkl"
    report = prepare_utd_mhad(UTD, out, verbose=False)
    return report, load_annotations(out)


def by_name(data, name):
    return next(a for a in data["annotations"] if a["frame_dir"] == name)


def test_nucla_counts_and_report(nucla):
    report, data = nucla
    counts = {k: len(v) for k, v in data["split"].items()}
    assert counts == {
        "xview_train": 1020,
        "xview_val": 464,
        "xview_dev_train": 516,  # view 1: tuning happens on views 1 -> 2, never on view 3
        "xview_dev_val": 504,
        "xview_val_unique": 369,  # view 3 less the 95 copies of view-2 training files
    }
    dev_views = {
        s: {a["view"] for a in data["annotations"] if a["frame_dir"] in set(data["split"][s])}
        for s in ("xview_dev_train", "xview_dev_val")
    }
    assert dev_views == {"xview_dev_train": {1}, "xview_dev_val": {2}}
    assert (data["layout"], data["dataset"], data["classes"]) == (
        "kinect20",
        "nucla",
        list(NUCLA_CLASSES),
    )
    labels = np.array([a["label"] for a in data["annotations"]])
    assert labels.min() == 0 and labels.max() == 9 and len(np.unique(labels)) == 10
    assert report["dropped"]["count"] == 0
    assert report["kept_short"]["count"] == 10  # fewer than 10 frames, kept for the protocol
    assert by_name(data, "a02_s09_e04_v03")["keypoint"].shape == (1, 1, 20, 3)
    assert report["val_label_check"].startswith("464/464")
    # This release repeats view 2 as view 3 for every a02 and a03 sequence.
    assert len(report["cross_split_duplicates"]) == 95


@pytest.mark.parametrize(
    "name, label", [("a01_s01_e00_v01", 0), ("a08_s03_e01_v02", 6), ("a12_s09_e04_v03", 9)]
)
def test_nucla_sample_equals_json(nucla, name, label):
    _, data = nucla
    raw = json.loads((NUCLA / "all_sqe" / f"{name}.json").read_text())
    ann = by_name(data, name)
    want = np.asarray(raw["skeletons"], np.float32)
    assert ann["keypoint"].dtype == np.float32 and ann["keypoint"].shape == (1, *want.shape)
    np.testing.assert_array_equal(ann["keypoint"][0], want)  # KINECT20 order kept as is
    assert ann["label"] == label == raw["label"] - 1
    assert ann["total_frames"] == len(want)
    a, s, e, v = (int(p[1:]) for p in name.split("_"))
    assert (ann["subject"], ann["take"], ann["view"], ann["camera"]) == (s, e, v, v)
    assert name in data["split"]["xview_val" if v == 3 else "xview_train"]


def test_nucla_axes_are_kinect_camera_space(nucla):
    _, data = nucla
    x = np.concatenate([a["keypoint"][0] for a in data["annotations"]])  # (sum T, 20, 3)
    y = x[..., 1].mean(0)
    assert y[J("head")] > y[J("shoulder_center")] > y[J("hip_center")] > y[J("left_foot")]
    assert 2.0 < x[..., 2].mean() < 3.5  # depth in metres
    # The person's left is -x, as in NTU's Kinect v2 files.
    assert (x[:, J("left_shoulder"), 0] < x[:, J("right_shoulder"), 0]).mean() > 0.95


def test_utd_counts_and_report(utd):
    report, data = utd
    counts = {k: len(v) for k, v in data["split"].items()}
    assert counts == {
        "xsub_train": 431,
        "xsub_val": 430,
        "xsub_dev_train": 323,
        "xsub_dev_val": 108,
    }
    assert report["samples"] == 861 and report["dropped"]["count"] == 0
    assert data["classes"] == list(UTD_MHAD_CLASSES) and len(data["classes"]) == 27
    labels = np.array([a["label"] for a in data["annotations"]])
    assert labels.min() == 0 and labels.max() == 26
    assert (report["frames"]["min"], report["frames"]["max"]) == (41, 125)
    train = {
        a["subject"] for a in data["annotations"] if a["frame_dir"] in data["split"]["xsub_train"]
    }
    assert train == {1, 3, 5, 7}
    dev_val = {
        a["subject"] for a in data["annotations"] if a["frame_dir"] in data["split"]["xsub_dev_val"]
    }
    assert dev_val == {7} and not set(data["split"]["xsub_dev_train"]) & set(
        data["split"]["xsub_dev_val"]
    )


def test_utd_records_its_depth_maps(utd, tmp_path):
    """Every sample names its Depth/*.mat (relative to the root) and lists depth; a root
    without Depth/ gives skeleton-only samples."""
    report, data = utd
    a = next(s for s in data["annotations"] if s["frame_dir"] == "a27_s8_t3")
    assert a["depth_path"] == "Depth/a27_s8_t3_depth.mat" and (UTD / a["depth_path"]).is_file()
    assert report["with_depth"] == 861
    assert all(s["modalities"] == ["skeleton", "depth"] for s in data["annotations"])
    (tmp_path / "Skeleton").mkdir()
    (tmp_path / "Skeleton" / "a1_s1_t1_skeleton.mat").symlink_to(
        UTD / "Skeleton" / "a1_s1_t1_skeleton.mat"
    )
    rep = prepare_utd_mhad(tmp_path, tmp_path / "o.pkl", verbose=False)
    alone = load_annotations(tmp_path / "o.pkl")["annotations"][0]
    assert rep["with_depth"] == 0 and alone["modalities"] == ["skeleton"]
    assert "depth_path" not in alone


def test_utd_joint_reordering(utd):
    _, data = utd
    raw = scipy.io.loadmat(UTD / "Skeleton" / "a1_s1_t1_skeleton.mat")["d_skel"]  # (20, 3, T)
    ann = by_name(data, "a1_s1_t1")
    kp = ann["keypoint"][0]  # (T, 20, 3)
    assert kp.shape == (raw.shape[2], 20, 3) and ann["label"] == 0 and ann["trial"] == 1
    # UTD-MHAD lists head, shoulder centre, spine, hip centre first; KINECT20 the reverse.
    for kinect, source in [("hip_center", 3), ("spine", 2), ("shoulder_center", 1), ("head", 0)]:
        np.testing.assert_allclose(kp[:, J(kinect)], raw[source].T.astype(np.float32))
    np.testing.assert_allclose(kp[:, J("right_hand")], raw[11].T.astype(np.float32))
    np.testing.assert_allclose(kp[:, J("left_foot")], raw[15].T.astype(np.float32))


def test_utd_joint_semantics_after_import(utd):
    _, data = utd
    x = np.concatenate([a["keypoint"][0] for a in data["annotations"]])
    y = x[..., 1].mean(0)
    assert y[J("head")] > y[J("shoulder_center")] > y[J("spine")] > y[J("hip_center")]
    assert y[J("hip_center")] > y[J("left_knee")] > y[J("left_foot")]

    def path(ann, joint):  # total distance travelled by one joint, metres
        return np.abs(np.diff(ann["keypoint"][0, :, J(joint)], axis=0)).sum()

    # Class 0 "right arm swipe to the left": the right hand moves, the left rests.
    swipes = [a for a in data["annotations"] if a["label"] == 0]
    assert all(path(a, "right_hand") > 3 * path(a, "left_hand") for a in swipes)


def write_json(folder: Path, name: str, frames) -> None:
    label = {1: 1, 2: 2, 12: 10}[int(name[1:3])]
    text = json.dumps({"file_name": name, "skeletons": frames, "label": label})
    (folder / f"{name}.json").write_text(text)


def test_nucla_degenerate_files(tmp_path, capsys):
    folder = tmp_path / "all_sqe"
    folder.mkdir()
    pose = np.random.default_rng(0).normal(size=(30, 20, 3)).round(4)
    write_json(folder, "a01_s01_e00_v01", pose.tolist())
    write_json(folder, "a02_s01_e00_v03", pose[:1].tolist())  # single frame: kept
    write_json(folder, "a12_s01_e00_v02", np.zeros((5, 20, 3)).tolist())  # all zero: dropped
    (folder / "a01_s02_e00_v01.json").write_text('{"file_name": "a01_s02_e00_v01", "skel')
    nan_pose = pose.copy()
    nan_pose[3] = np.nan  # a whole empty frame is removed
    nan_pose[4, 7, 0] = np.nan  # a lone NaN becomes Kinect's "not tracked" 0
    write_json(folder, "a02_s02_e00_v02", nan_pose.tolist())
    report = prepare_nucla(tmp_path, tmp_path / "out.pkl", verbose=True)
    data = load_annotations(tmp_path / "out.pkl")
    # the dropped files are named with their reasons, and the report is written beside the file
    printed = capsys.readouterr().out
    assert "    a01_s02_e00_v01.json: " in printed and "a12_s01_e00_v02" in printed
    assert printed.rstrip().endswith(
        f"wrote {tmp_path / 'out.pkl'} and {tmp_path / 'out.pkl'}.report.json"
    )
    assert json.loads((tmp_path / "out.pkl.report.json").read_text()) == report
    assert report["split_counts"] == {
        "xview_train": 2,
        "xview_val": 1,
        "xview_dev_train": 1,
        "xview_dev_val": 1,
        "xview_val_unique": 1,
    }
    assert report["kept_short"]["names"] == ["a02_s01_e00_v03"]
    assert report["dropped"]["count"] == 2
    assert set(report["dropped"]["reasons"]) == {"all_zero", "unreadable"}
    fixed = by_name(data, "a02_s02_e00_v02")
    # Frame 3 is gone, so the old frame 4 (with the lone NaN) is now frame 3.
    assert fixed["total_frames"] == 29 and fixed["keypoint"][0, 3, 7, 0] == 0.0
    np.testing.assert_allclose(fixed["keypoint"][0, 3, 7, 1:], pose[4, 7, 1:].astype(np.float32))
    assert by_name(data, "a02_s01_e00_v03")["label"] == 1


def test_utd_degenerate_files(tmp_path):
    folder = tmp_path / "Skeleton"
    folder.mkdir()
    skel = np.random.default_rng(1).normal(size=(20, 3, 40))
    scipy.io.savemat(folder / "a1_s1_t1_skeleton.mat", {"d_skel": skel})
    scipy.io.savemat(folder / "a2_s2_t1_skeleton.mat", {"d_skel": skel[:, :, :1]})  # one frame
    scipy.io.savemat(folder / "a3_s1_t1_skeleton.mat", {"d_skel": np.zeros((20, 3, 40))})
    scipy.io.savemat(folder / "a4_s1_t1_skeleton.mat", {"d_skel": skel[:15]})  # 15 joints
    scipy.io.savemat(folder / "a5_s1_t1_skeleton.mat", {"d_skel": np.full((20, 3, 8), np.nan)})
    (folder / "a6_s1_t1_skeleton.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    # the name of another file's sample (a01 is a1): dropped as such, the import goes on
    scipy.io.savemat(folder / "a01_s1_t1_skeleton.mat", {"d_skel": skel})
    report = prepare_utd_mhad(tmp_path, tmp_path / "out.pkl", verbose=False)
    assert report["split_counts"] == {
        "xsub_train": 1,
        "xsub_val": 1,
        "xsub_dev_train": 1,
        "xsub_dev_val": 0,
    }
    assert report["kept_short"]["names"] == ["a2_s2_t1"]
    reasons = {k: len(v) for k, v in report["dropped"]["reasons"].items()}
    assert reasons == {"all_zero": 1, "unreadable": 2, "non_finite": 1, "duplicate": 1}
    assert report["dropped"]["reasons"]["duplicate"] == [
        "a1_s1_t1_skeleton.mat: names the sample a1_s1_t1, as a01_s1_t1_skeleton.mat does (kept)"
    ]
    one = read_utd_mhad_mat(folder / "a2_s2_t1_skeleton.mat")
    assert one["keypoint"].shape == (1, 1, 20, 3)
    np.testing.assert_allclose(one["keypoint"][0, 0, J("head")], skel[0, :, 0].astype(np.float32))


def test_errors_name_the_file(tmp_path):
    (tmp_path / "Skeleton").mkdir()
    with pytest.raises(FileNotFoundError, match="Skeleton"):
        prepare_utd_mhad(tmp_path, tmp_path / "out.pkl", verbose=False)
    bad = tmp_path / "Skeleton" / "a1_s1_t1_skeleton.mat"
    bad.write_text("not a mat file")
    with pytest.raises(SkeletonFileError, match="a1_s1_t1_skeleton.mat: not a readable"):
        read_utd_mhad_mat(bad)
    with pytest.raises(ValueError, match="none of the 1 files is usable"):
        prepare_utd_mhad(tmp_path, tmp_path / "out.pkl", verbose=False)


def test_a_wrong_dataset_folder_names_the_one_meant(tmp_path):
    """The folder a user gives is often one level off: the set's own Skeleton/ or all_sqe/
    folder, the folder above the set, or an SBU set folder for the set's root. The error
    names the folder meant (before: "ROOT/Skeleton/Skeleton: no *.mat skeleton files")."""
    from skelact.data.sources.importers import prepare_utd_mhad
    from skelact.data.sources.importing import no_files

    utd = tmp_path / "data" / "utd_mhad" / "Skeleton"
    utd.mkdir(parents=True)
    (utd / "a1_s1_t1_skeleton.mat").touch()
    sbu = tmp_path / "data" / "sbu" / "s01s02" / "01" / "001"
    sbu.mkdir(parents=True)
    (sbu / "skeleton_pos.txt").touch()
    data = tmp_path / "data"
    with pytest.raises(FileNotFoundError) as err:
        prepare_utd_mhad(utd, tmp_path / "x.store", verbose=False)
    assert str(err.value) == (
        f"{utd} is the dataset's Skeleton/ folder: give the folder above it, {utd.parent}"
    )
    assert not (tmp_path / "x.store").exists()
    assert no_files(data / "Skeleton", "*.mat") == (
        f"{data} has no Skeleton/ folder; did you mean {data / 'utd_mhad'}?"
    )
    sbu_pattern = "*/*/*/skeleton_pos.txt"
    assert no_files(data, sbu_pattern) == (
        f"{data}: no {sbu_pattern} skeleton files; did you mean {data / 'sbu'}?"
    )
    assert no_files(data / "sbu" / "s01s02", sbu_pattern).endswith(f"did you mean {data / 'sbu'}?")
    assert no_files(tmp_path / "none" / "x", "*.txt") == f"{tmp_path / 'none'}: no such folder"
    assert no_files(tmp_path, "*.txt") == f"{tmp_path}: no *.txt skeleton files"
