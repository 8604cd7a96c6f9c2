"""The annotation format: pyskl-compatible loading and validation errors."""

import pickle

import numpy as np
import pytest

from skelact.data.formats.annotations import load_annotations, save_annotations
from skelact.data.formats.schema import AnnotationError, num_classes, validate


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
    assert num_classes(load_annotations(path)) == 4  # no class table: max label + 1


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
    path = tmp_path / "ok.pkl"
    save_annotations(pyskl_like(), path)
    before = path.read_bytes()
    data = pyskl_like(2)
    data["report"] = lambda: 0  # valid structure, but pickling fails halfway through
    with pytest.raises((pickle.PicklingError, AttributeError)):
        save_annotations(data, path)
    assert path.read_bytes() == before and len(load_annotations(path)["annotations"]) == 4
    assert list(tmp_path.glob("*.tmp")) == []
    data = pyskl_like()
    data["annotations"][0]["label"] = "x"
    with pytest.raises(AnnotationError):
        save_annotations(data, tmp_path / "bad.pkl")
    assert not (tmp_path / "bad.pkl").exists()


def test_duplicate_names_are_rejected():
    data = pyskl_like()
    data["annotations"][3]["frame_dir"] = data["annotations"][1]["frame_dir"]
    data["split"] = {"all": [a["frame_dir"] for a in data["annotations"]]}
    msg = "dup.pkl: annotation 3 repeats the name 'S001C001P002R001A002'"
    with pytest.raises(AnnotationError, match=msg):
        validate(data, source="dup.pkl")


def test_not_a_pickle(tmp_path):
    (tmp_path / "junk.pkl").write_text("hello")
    with pytest.raises(AnnotationError, match="junk.pkl: not a readable pickle"):
        load_annotations(tmp_path / "junk.pkl")
