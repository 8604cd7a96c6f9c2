"""The annotation format: pyskl-compatible loading and validation errors."""

import pickle

import numpy as np
import pytest

from skelact.data.annotations import (
    AnnotationError,
    load_annotations,
    num_classes,
    save_annotations,
)


def pyskl_like(n: int = 4) -> dict:
    """Shaped like pyskl's ntu60_3danno.pkl: no class table, no layout, labels 0-based."""
    anns = [
        {
            "frame_dir": f"S001C001P00{i + 1}R001A00{i + 1}",
            "label": i,
            "keypoint": np.zeros((2, 10, 25, 3), np.float32) + i,
            "total_frames": 10,
        }
        for i in range(n)
    ]
    names = [a["frame_dir"] for a in anns]
    return {"split": {"xsub_train": names[:2], "xsub_val": names[2:]}, "annotations": anns}


def test_pyskl_pickle_loads_as_is(tmp_path):
    path = tmp_path / "ntu60_3danno.pkl"
    path.write_bytes(pickle.dumps(pyskl_like()))
    data = load_annotations(path)
    assert data["split"]["xsub_val"] == ["S001C001P003R001A003", "S001C001P004R001A004"]
    assert num_classes(data) == 4
    assert data["annotations"][3]["keypoint"][0, 0, 0, 0] == 3.0


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: d["annotations"][1].pop("keypoint"), "misses field(s) ['keypoint']"),
        (lambda d: d["annotations"][0].update(label=-1), "label -1 out of range"),
        (lambda d: d.update(classes=["a", "b"]), "label 2 out of range (0..1)"),
        (lambda d: d["split"]["xsub_val"].append("S999"), "unknown sample(s), e.g. 'S999'"),
        (
            lambda d: d["annotations"][2]["keypoint"].__setitem__((1, 4, 7, 0), np.nan),
            "non-finite coordinate at body 1, frame 4, joint 7",
        ),
        (lambda d: d["annotations"][0].update(keypoint=np.zeros((10, 25, 3))), "(M, T, V, C)"),
    ],
)
def test_validation_names_file_sample_and_problem(tmp_path, break_it, message):
    data = pyskl_like()
    break_it(data)
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(AnnotationError) as err:
        load_annotations(path)
    assert message in str(err.value) and "bad.pkl" in str(err.value)


def test_save_is_atomic_and_validates(tmp_path):
    data = pyskl_like()
    save_annotations(data, tmp_path / "ok.pkl")
    assert load_annotations(tmp_path / "ok.pkl")["annotations"][0]["total_frames"] == 10
    data["annotations"][0]["label"] = "x"
    with pytest.raises(AnnotationError):
        save_annotations(data, tmp_path / "bad.pkl")
    assert not (tmp_path / "bad.pkl").exists()


def test_not_a_pickle(tmp_path):
    (tmp_path / "junk.pkl").write_text("hello")
    with pytest.raises(AnnotationError, match="junk.pkl: not a readable pickle"):
        load_annotations(tmp_path / "junk.pkl")
