"""NTU RGB+D: the .skeleton parser on real files, body selection, bad input, names, protocols,
missing lists and `prepare_ntu` on a synthetic folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from skelact.data.formats.annotations import load_annotations
from skelact.data.sources.ntu import (
    NTU60_XSUB_TRAIN_SUBJECTS,
    NTU120_XSUB_TRAIN_SUBJECTS,
    NTUName,
    in_dataset,
    missing_samples,
    ntu_classes,
    parse_name,
    split_of,
)
from skelact.data.sources.ntu_prepare import prepare_ntu
from skelact.data.sources.ntu_skeleton import SkeletonFormatError, load_skeleton, load_skeleton_full
from skelact.data.synthetic import write_synthetic_ntu
from tests.conftest import SHARED_DATA, shared_data

REAL = {"S001C001P001R001A001": 103, "S001C001P001R001A011": 82, "S002C001P003R001A003": 100,
        "S003C001P015R001A034": 71}  # fmt: skip


def real_file(name: str) -> Path:
    return shared_data("ntu", "skeletons", f"{name}.skeleton")


def joint_line(text_lines: list[str], t: int, j: int) -> list[float]:
    """Values of joint j in frame t of a one-body-per-frame file (28 lines a frame)."""
    assert text_lines[1 + 28 * t] == "1", "the test expects one body in every frame"
    return [float(v) for v in text_lines[1 + 28 * t + 3 + j].split()]


# ---------------------------------------------------------------------------- real files
@pytest.mark.parametrize("name, frames", REAL.items())
def test_real_file_values_and_shapes(name, frames):
    path = real_file(name)
    text_lines = path.read_bytes().decode().split("\r\n")
    full = load_skeleton_full(path)
    kp = full["keypoint"]
    assert kp.shape == (2, frames, 25, 3) and kp.dtype == np.float32
    assert full["color_xy"].shape == full["depth_xy"].shape == (2, frames, 25, 2)
    assert full["total_frames"] == frames and full["num_bodies"] == 1
    assert not kp[1].any() and np.abs(kp[0]).sum(axis=(1, 2)).min() > 0  # one body, all frames
    for t in (0, frames // 2, frames - 1):
        for j in (0, 3, 11, 24):
            v = np.float32(joint_line(text_lines, t, j))
            np.testing.assert_array_equal(kp[0, t, j], v[:3])
            np.testing.assert_array_equal(full["depth_xy"][0, t, j], v[3:5])
            np.testing.assert_array_equal(full["color_xy"][0, t, j], v[5:7])
    np.testing.assert_array_equal(load_skeleton(path, max_bodies=1), kp[:1])


def test_real_file_exponent_notation():
    """S001C001P001R001A011 holds a value written as -7.257856E-05."""
    path = real_file("S001C001P001R001A011")
    text_lines = path.read_bytes().decode().split("\r\n")
    hits = [(i, ln) for i, ln in enumerate(text_lines) if "E-" in ln]
    assert len(hits) == 1
    i, line = hits[0]
    t, j = (i - 1) // 28, (i - 1) % 28 - 3
    col = next(c for c, v in enumerate(line.split()) if "E" in v)
    full = load_skeleton_full(path)
    stacked = np.concatenate([full["keypoint"], full["depth_xy"], full["color_xy"]], -1)
    assert col < 7 and stacked[0, t, j, col] == np.float32(line.split()[col])


def test_real_file_body_id():
    full = load_skeleton_full(real_file("S001C001P001R001A001"))
    assert full["body_ids"] == ["72057594037931101"]


# ---------------------------------------------------------------------------- body selection
def write_skeleton(path: Path, frames: list[list[tuple[str, np.ndarray]]]) -> Path:
    """A .skeleton file (CRLF) from per-frame lists of (body ID, (25, 3) xyz)."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, xyz in bodies:
            lines += [f"{body_id} 0 1 1 1 1 0 0.01 -0.02 2", "25"]
            lines += [f"{x!r} {y!r} {z!r} 250.5 200.25 960.5 540.75 1 0 0 0 2"
                      for x, y, z in xyz.astype(np.float64).tolist()]  # fmt: skip
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def moving_body(frames: int, amplitude: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.2, (25, 3)) + [0, 0, 3]
    t = np.arange(frames)[:, None, None]
    return (base + amplitude * np.sin(t / 3 + rng.uniform(0, 6, (25, 3)))).astype(np.float32)


def test_body_selection(tmp_path):
    """Over budget: the short noise body goes, the more active of the rest comes first."""
    calm, active, noise = moving_body(30, 0.05, 0), moving_body(20, 0.3, 1), moving_body(4, 2, 2)
    frames = []
    for t in range(30):
        bodies = [("101", calm[t])]
        if 5 <= t < 25:
            bodies.append(("102", active[t - 5]))
        if 10 <= t < 14:
            bodies.append(("103", noise[t - 10]))
        frames.append(bodies)
    path = write_skeleton(tmp_path / "S001C001P001R001A050.skeleton", frames)
    full = load_skeleton_full(path, max_bodies=2)
    kp = full["keypoint"]
    assert kp.shape == (2, 30, 25, 3) and full["num_bodies"] == 3
    assert full["body_ids"] == ["102", "101"]
    np.testing.assert_array_equal(kp[0, 5:25], active)
    assert not kp[0, :5].any() and not kp[0, 25:].any()  # zeros where absent
    np.testing.assert_array_equal(kp[1], calm)
    np.testing.assert_array_equal(load_skeleton(path, max_bodies=1)[0], kp[0])
    assert full["denoise"]["dropped_length"] == 1
    # Within budget too, the 4-frame ghost is dropped: it would be the most active body.
    frames = [[("101", calm[t])] + ([("103", noise[t - 10])] if 10 <= t < 14 else [])
              for t in range(30)]  # fmt: skip
    full = load_skeleton_full(write_skeleton(tmp_path / "b.skeleton", frames), max_bodies=2)
    assert full["body_ids"] == ["101"] and full["num_bodies"] == 2
    np.testing.assert_array_equal(full["keypoint"][0], calm)
    assert not full["keypoint"][1].any()


def test_zero_body_file_parses_to_zeros(tmp_path):
    path = write_skeleton(tmp_path / "S001C001P001R001A001.skeleton", [[] for _ in range(12)])
    full = load_skeleton_full(path)
    assert full["keypoint"].shape == (2, 12, 25, 3) and not full["keypoint"].any()
    assert full["body_ids"] == [] and full["num_bodies"] == 0


# ---------------------------------------------------------------------------- bad input
def corrupt(text_lines: list[str], case: str) -> tuple[str, str]:
    """Corrupted text and the regex its error message must match."""
    lines = list(text_lines)
    if case == "empty":
        return "", "the file is empty"
    if case == "truncated":  # frame 12, after its 7th joint line
        start = 1 + 28 * 11 + 3
        return "\r\n".join(
            lines[: start + 7]
        ), "frame 12 declares 25 joints but the file ends after 7"
    if case == "joint_count":
        lines[1 + 28 * 4 + 2] = "24"
        return "\r\n".join(lines), rf"line {1 + 28 * 4 + 3}: frame 5, body 1 declares 24 joints"
    if case == "non_numeric":
        i = 1 + 28 * 2 + 3 + 4  # frame 3, joint 5
        lines[i] = lines[i].replace(lines[i].split()[1], "abc", 1)
        return "\r\n".join(lines), rf"line {i + 1} \(frame 3, joint 5\): expected 12 numbers"
    if case == "short_line":
        i = 1 + 28 * 6 + 3 + 9  # frame 7, joint 10
        lines[i] = " ".join(lines[i].split()[:11])
        return "\r\n".join(lines), rf"line {i + 1} \(frame 7, joint 10\)"
    if case == "long_line":
        i = 1 + 28 * 8 + 3 + 2  # frame 9, joint 3
        lines[i] = lines[i] + " 7"
        return "\r\n".join(lines), rf"line {i + 1} \(frame 9, joint 3\)"
    if case == "frame_count":
        lines[0] = "lots"
        return "\r\n".join(lines), "line 1: expected the frame count, got 'lots'"
    if case == "count_edited_down":  # 20 frames of one body each (28 lines) left unread
        lines[0] = str(int(lines[0]) - 20)
        first = 1 + 28 * (int(lines[0])) + 1
        return "\r\n".join(lines), (
            rf"frame count \(line 1\) says {lines[0]}, but 560 more non-empty line\(s\) follow "
            rf"frame {lines[0]}, from line {first}$"
        )
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "truncated",
        "joint_count",
        "non_numeric",
        "short_line",
        "long_line",
        "frame_count",
        "count_edited_down",
    ],
)
def test_bad_input_names_file_and_place(tmp_path, case):
    text_lines = real_file("S001C001P001R001A001").read_bytes().decode().split("\r\n")
    text, pattern = corrupt(text_lines, case)
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_bytes(text.encode())
    with pytest.raises(SkeletonFormatError, match=pattern) as err:
        load_skeleton(path)
    assert str(err.value).startswith("NTU skeleton S001C001P001R001A001.skeleton: ")


def test_odd_spacing_still_parses(tmp_path):
    """Valid but unusual text (double spaces, LF only) takes the strict path and parses."""
    src = real_file("S001C001P001R001A001")
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes().replace(b"\r\n", b"\n").replace(b" ", b"  ", 50))
    np.testing.assert_array_equal(load_skeleton(path), load_skeleton(src))


# ---------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "text",
    ["S001C002P003R002A013", "/data/nturgbd/S001C002P003R002A013.skeleton",
     "S001C002P003R002A013_rgb.avi", Path("depth/S001C002P003R002A013")],
)  # fmt: skip
def test_parse_name(text):
    n = parse_name(text)
    assert n == NTUName(setup=1, camera=2, subject=3, replication=2, action=13)
    assert str(n) == "S001C002P003R002A013"


@pytest.mark.parametrize(
    "text", ["S01C002P003R002A013", "video.avi", "S001C002P003R002A0134", "S000C001P001R001A001"]
)
def test_parse_name_rejects(text):
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_name(text)


# ---------------------------------------------------------------------------- protocols
def readme_ids(after: str) -> set[int]:
    """The id list that follows `after` in ../shared/data/README.md."""
    text = " ".join(shared_data("README.md").read_text().split())
    start = text.index(after) + len(after)
    return {int(v) for v in re.match(r"[\d ]+", text[start:]).group().split()}


def test_xsub_lists_match_readme():
    ntu60 = readme_ids("training performers ")
    assert NTU60_XSUB_TRAIN_SUBJECTS == ntu60 and len(ntu60) == 20
    assert NTU120_XSUB_TRAIN_SUBJECTS == ntu60 | readme_ids("the NTU60 list plus ")
    assert len(NTU120_XSUB_TRAIN_SUBJECTS) == 53


def test_split_membership():
    for subject in range(1, 41):
        part = split_of(f"S001C001P{subject:03d}R001A001", "ntu60")["xsub"]
        assert part == ("train" if subject in NTU60_XSUB_TRAIN_SUBJECTS else "val")
    assert split_of("S001C001P003R001A001")["xsub"] == "val"
    assert [split_of(f"S005C{c:03d}P001R001A001")["xview"] for c in (1, 2, 3)] == [
        "val", "train", "train"]  # fmt: skip
    s120 = split_of("S018C001P045R002A061", "ntu120")
    assert s120 == {"xsub": "train", "xset": "train"}
    assert split_of("S019C001P044R002A061", "ntu120") == {"xsub": "val", "xset": "val"}
    assert in_dataset("S017C001P001R001A060", "ntu60")
    assert not in_dataset("S018C001P001R001A001", "ntu60")
    assert not in_dataset("S001C001P001R001A061", "ntu60")
    with pytest.raises(ValueError, match="not part of ntu60"):
        split_of("S001C001P001R001A061", "ntu60")


def test_missing_lists_and_classes():
    m60, m120 = missing_samples("ntu60"), missing_samples("ntu120")
    assert len(m60) == 302 and len(m120) == 535 and m60 <= m120
    assert {"S001C002P005R002A008", "S017C003P020R001A059"} <= m60
    shipped = SHARED_DATA / "ntu" / "NTU_RGBD_samples_with_missing_skeletons.txt"
    if shipped.exists():
        assert m60 == set(shipped.read_text().split()[-302:])
    c60, c120 = ntu_classes("ntu60"), ntu_classes("ntu120")
    assert len(c60) == 60 and c120[:60] == c60 and len(c120) == 120
    assert (c60[0], c60[22], c60[59]) == (
        "drink water", "hand waving", "walking apart from each other")  # fmt: skip
    assert c120[119].startswith("finger-guessing game")


# ---------------------------------------------------------------------------- prepare_ntu
@pytest.fixture(scope="module")
def ntu_dir(tmp_path_factory) -> Path:
    """27 good synthetic files + a truncated one, a bodiless one, a missing one, an NTU120 one."""
    root = tmp_path_factory.mktemp("ntu")
    good = write_synthetic_ntu(root / "good", num_classes=3, subjects=(1, 2, 3), replications=(1,))
    data = good[0].read_bytes()
    cut = [m.end() for m in re.finditer(rb"\r\n25\r\n", data)][9]  # 10th body's joints
    for _ in range(7):
        cut = data.index(b"\r\n", cut) + 2
    (root / "S001C001P004R001A001.skeleton").write_bytes(data[:cut])
    write_skeleton(root / "S001C001P004R001A002.skeleton", [[] for _ in range(20)])
    shutil.copy(good[0], root / "S001C002P005R002A008.skeleton")  # officially missing
    shutil.copy(good[0], root / "S018C001P045R001A061.skeleton")  # NTU120 only
    return root


def test_prepare_ntu(ntu_dir, tmp_path, capsys):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "rgb" / "S001C002P001R001A001_rgb.avi").write_bytes(b"")
    (tmp_path / "depth" / "S001C003P002R001A003").mkdir(parents=True)
    out = tmp_path / "ntu60.pkl"
    report = prepare_ntu(ntu_dir, out, "ntu60", rgb=tmp_path / "rgb", depth=tmp_path / "depth")
    assert report["files_found"] == 31 and report["samples"] == 27
    assert report["skipped_missing"] == 1 and report["outside_dataset"] == 1
    assert report["failed"] == 2
    assert "declares 25 joints but the file ends after 7" in report["failures"][
        "S001C001P004R001A001"]  # fmt: skip
    assert report["failures"]["S001C001P004R001A002"] == "no body in any of its 20 frames"
    assert report["splits"] == {"xsub_train": 18, "xsub_val": 9, "xview_train": 18, "xview_val": 9}
    assert report["modalities"] == {"rgb": 1, "depth": 1}
    data = load_annotations(out)
    assert data["layout"] == "ntu25" and len(data["classes"]) == 60 and data["dataset"] == "ntu60"
    anns = {a["frame_dir"]: a for a in data["annotations"]}
    assert all(parse_name(n).subject == 3 for n in data["split"]["xsub_val"])
    assert all(parse_name(n).camera == 1 for n in data["split"]["xview_val"])
    a = anns["S001C002P001R001A001"]
    assert a["label"] == 0 and a["modalities"] == ["skeleton", "rgb"]
    assert anns["S001C003P002R001A003"]["modalities"] == ["skeleton", "depth"]
    assert a["keypoint"].dtype == np.float32 and a["keypoint"].shape[1:] == (
        a["total_frames"],
        25,
        3,
    )
    assert a["color_xy"].dtype == np.float16 and a["color_xy"].shape[:3] == a["keypoint"].shape[:3]
    assert (a["subject"], a["camera"], a["setup"], a["replication"]) == (1, 2, 1, 1)
    direct = load_skeleton_full(ntu_dir / "good" / "S001C002P001R001A001.skeleton")
    np.testing.assert_array_equal(a["keypoint"], direct["keypoint"][: len(direct["body_ids"])])
    assert json.loads((out.parent / (out.name + ".report.json")).read_text()) == report
    printed = capsys.readouterr().out
    assert "27 samples" in printed and "S001C001P004R001A001" in printed
    over = report["over_max_bodies"]
    assert f"; {over} with more than 2 bodies (2 kept)" in printed
    assert "  with a file found: rgb 1 of 27, depth 1 of 27" in printed


def test_prepare_ntu_two_workers_match_one(ntu_dir, tmp_path):
    prepare_ntu(ntu_dir, tmp_path / "1.pkl", workers=1)
    prepare_ntu(ntu_dir, tmp_path / "2.pkl", workers=2)
    a, b = load_annotations(tmp_path / "1.pkl"), load_annotations(tmp_path / "2.pkl")
    assert a["split"] == b["split"] and len(a["annotations"]) == len(b["annotations"]) == 27
    for x, y in zip(a["annotations"], b["annotations"], strict=True):
        assert x["frame_dir"] == y["frame_dir"]
        np.testing.assert_array_equal(x["keypoint"], y["keypoint"])
        np.testing.assert_array_equal(x["depth_xy"], y["depth_xy"])


def test_prepare_ntu120_splits(ntu_dir, tmp_path):
    report = prepare_ntu(ntu_dir, tmp_path / "ntu120.pkl", "ntu120")
    assert report["samples"] == 28 and report["outside_dataset"] == 0
    # xset: setup 1 (odd) tests, the S018 file trains; xsub: P045 trains.
    assert report["splits"] == {"xsub_train": 19, "xsub_val": 9, "xset_train": 1, "xset_val": 27}
    data = load_annotations(tmp_path / "ntu120.pkl")
    assert len(data["classes"]) == 120
    assert data["split"]["xset_train"] == ["S018C001P045R001A061"]


def test_prepare_ntu_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no \*\.skeleton files under"):
        prepare_ntu(tmp_path, tmp_path / "x.pkl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_ntu(tmp_path / "nope", tmp_path / "x.pkl")
    with pytest.raises(ValueError, match="unknown NTU dataset"):
        prepare_ntu(tmp_path, tmp_path / "x.pkl", dataset="ntu90")
    with pytest.raises(ValueError, match="workers and max_bodies must be >= 1, got -3 and 2"):
        prepare_ntu(tmp_path, tmp_path / "x.pkl", workers=-3)
    write_skeleton(tmp_path / "S001C002P005R002A008.skeleton", [[] for _ in range(3)])
    with pytest.raises(ValueError, match=r"no usable ntu60 skeleton .* \(1 official missing"):
        prepare_ntu(tmp_path, tmp_path / "x.pkl")
    # every file broken: the first one's reason is in the message
    (tmp_path / "S001C001P001R001A001.skeleton").write_text("3\n1\n")
    with pytest.raises(ValueError, match=r"1 failed.*; the first failure, S001C001P001R001A001: "):
        prepare_ntu(tmp_path, tmp_path / "x.pkl")


def test_a_damaged_copy_gives_way_to_an_intact_one(tmp_path, capsys):
    """The same sample twice in the folder, the copy found first cut mid-frame: the intact
    copy is parsed instead (it was skipped as a duplicate, and the sample lost); a copy that
    fails with no intact one is named by its path."""
    name = "S001C001P001R001A001"
    real = real_file(name)
    (tmp_path / "sk" / "good").mkdir(parents=True)
    shutil.copy(real, tmp_path / "sk" / "good")
    (tmp_path / "sk" / real.name).write_bytes(real.read_bytes()[:50000])  # sorted first
    report = prepare_ntu(tmp_path / "sk", tmp_path / "a.store", workers=1)
    assert report["samples"] == 1 and report["failures"] == {}
    assert report["replaced"][name].startswith(f"{tmp_path / 'sk' / real.name} failed (NTU ")
    assert report["replaced"][name].endswith(f"its copy {tmp_path / 'sk/good' / real.name} used")
    got = load_annotations(tmp_path / "a.store")["annotations"][0]["keypoint"]
    np.testing.assert_array_equal(got[0], load_skeleton(real)[0])
    assert f"{name}: {tmp_path / 'sk' / real.name} failed" in capsys.readouterr().out

    (tmp_path / "sk" / "good" / real.name).write_bytes(b"garbage")  # both copies damaged
    shutil.copy(real_file("S001C001P001R001A011"), tmp_path / "sk")
    report = prepare_ntu(tmp_path / "sk", tmp_path / "b.store", workers=2)
    assert report["samples"] == 1 and report["replaced"] == {}
    assert report["failures"][name].startswith(f"{tmp_path / 'sk' / real.name}: NTU skeleton")


def test_a_mistyped_rgb_or_depth_folder_is_refused(tmp_path):
    """--depth nonexist_dir used to write a store whose samples have no depth, which `prepare
    features` later reported as "no sample has a depth source"."""
    (tmp_path / "sk").mkdir()
    shutil.copy(real_file("S001C001P001R001A001"), tmp_path / "sk")
    for flag in ("rgb", "depth"):
        with pytest.raises(FileNotFoundError, match=f"prepare ntu --{flag} .*nope: no such folder"):
            prepare_ntu(tmp_path / "sk", tmp_path / "a.store", **{flag: tmp_path / "nope"})
    assert not (tmp_path / "a.store").exists()
