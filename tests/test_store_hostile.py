"""Stores from strangers: each hostile or damaged store is refused when opened (or, for values
inside the arrays, when the sample is read), with an error naming the file and the sample."""

import json
import pickle
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from skelact.data.formats.annotations import load_annotations, open_annotations, save_annotations
from skelact.data.formats.schema import AnnotationError
from skelact.data.formats.store import SkeletonStore, StoreError
from tests.conftest import toy_annotations


@pytest.fixture
def store(tmp_path):
    """A good toy store: 8 samples (1, 40, 25, 3) float32, layout ntu25, 2 classes named."""
    data = toy_annotations(num_classes=2, per_class=4)
    data["layout"], data["classes"] = "ntu25", ["wave", "clap"]
    data["annotations"][2]["keypoint_score"] = np.ones((1, 40, 25), np.float32)
    data["annotations"][3]["keypoint_2d"] = np.zeros((1, 40, 25, 2), np.float32)
    return save_annotations(data, tmp_path / "toy.store")


def edit_index(path, **changes):
    """Rewrite index.npz with some members changed: name -> fn(array) -> array."""
    with np.load(path / "index.npz") as z:
        index = {k: z[k] for k in z.files}
    for key, fn in changes.items():
        key = key.replace("__", ".")
        index[key] = fn(index[key].copy())
    with open(path / "index.npz", "wb") as f:
        np.savez(f, **index)


def edit_meta(path, fn):
    meta = json.loads((path / "meta.json").read_text())
    fn(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def set_row(i, value):
    def fn(a):
        a[i] = value
        return a

    return fn


def refused(path, pattern):
    with pytest.raises(StoreError, match=pattern) as err:
        SkeletonStore(path)
    assert "toy.store" in str(err.value)


def test_the_good_store_opens(store):
    s = SkeletonStore(store)
    assert len(s) == 8 and s[2]["keypoint_score"].shape == (1, 40, 25)


def test_shape_with_zero_frames_and_a_million_bodies(store):
    edit_index(store, field__keypoint__shape=set_row(3, [10**6, 0, 25, 3]))
    refused(store, r"index\.npz: sample 3 \('toy_c0_003'\): has no frames")


def test_shape_whose_byte_count_wraps_around(store):
    edit_index(store, field__keypoint__shape=set_row(1, [2**32, 2**32, 25, 3]))
    refused(store, r"sample 1 .*'keypoint' of shape \[4294967296, 4294967296, 25, 3\].* does "
                   r"not fit")  # fmt: skip


def test_too_many_bodies_even_if_the_bytes_fit(store):
    edit_index(store, field__keypoint__shape=set_row(0, [65, 1, 25, 3]))  # 19.5 KB: inside
    refused(store, r"sample 0 .*keypoint shape \(65, 1, 25, 3\) out of bounds \(M in 1\.\.64")


def test_joints_other_than_the_layout(store):
    edit_index(store, field__keypoint__shape=set_row(5, [1, 40, 20, 3]))
    refused(store, r"sample 5 .*V = 25 \(the layout's\)")


def test_negative_dimension(store):
    edit_index(store, field__keypoint__shape=set_row(4, [1, -40, 25, 3]))
    refused(store, r"sample 4 .*with shape \[1, -40, 25, 3\]")


def test_unaligned_offset(store):
    edit_index(store, field__keypoint__offset=lambda a: a + 4)
    refused(store, r"sample 0 .*'keypoint' at offset 4 \(64-byte aligned")


def test_offset_past_the_end(store):
    edit_index(store, field__keypoint__offset=set_row(7, 10**12))
    refused(store, r"sample 7 .*does not fit in the \d+ bytes of arrays\.bin")


@pytest.mark.parametrize(
    "field, row, shape",
    [("keypoint_score", 2, [1, 39, 25]), ("keypoint_2d", 3, [1, 40, 24, 2])],
)
def test_per_joint_field_of_another_shape(store, field, row, shape):
    edit_index(store, **{f"field__{field}__shape": set_row(row, shape)})
    dims = ", ".join(map(str, shape[:3]))
    refused(store, rf"sample {row} .*{field} shape \[{dims}\] does not match")


@pytest.mark.parametrize("label, pattern", [(-1, r"label -1 out of range \(0\.\.1\)"),
                                            (2, r"label 2 out of range \(0\.\.1\)")])  # fmt: skip
def test_label_outside_the_class_table(store, label, pattern):
    edit_index(store, col__label=set_row(6, label))
    refused(store, r"sample 6 \('toy_c1_002'\): " + pattern)


def test_huge_label_without_a_class_table(store):
    edit_meta(store, lambda m: m["top"].pop("classes"))
    edit_index(store, col__label=set_row(6, 3 * 10**8))
    refused(store, r"sample 6 .*label 300000000 out of range \(0\.\.99999, as there is no class")


def test_zero_total_frames(store):
    edit_index(store, col__total_frames=set_row(1, 0))
    refused(store, r"sample 1 .*has no frames or a bad total_frames \(0\)")


def test_repeated_name(store):
    edit_index(store, col__frame_dir=set_row(1, "toy_c0_000"))
    refused(store, r"the name 'toy_c0_000' is repeated")


@pytest.mark.parametrize("classes", ["abc", [1, 2], {"a": 0}])
def test_classes_not_a_list_of_names(store, classes):
    edit_meta(store, lambda m: m["top"].update(classes=classes))
    refused(store, r"meta\.json: 'classes' must be a list of names")


def test_unknown_layout(store):
    edit_meta(store, lambda m: m["top"].update(layout="coco17"))
    refused(store, r"meta\.json: unknown layout 'coco17'")


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda m: m.update(num_samples=10**9), r"10\d* samples in \d+ bytes"),
        (lambda m: m["fields"]["keypoint"].update(dtype="|O"), r"field 'keypoint' has a bad"),
        (lambda m: m["columns"].update(label="json"), r"columns must include"),
        (lambda m: m.update(arrays_bytes=-1), r"must be counts"),
        # numpy raises ValueError (not TypeError) for this one: the file went unnamed
        (lambda m: m["fields"]["keypoint"].update(dtype="(-1,)f4"), r"toy.store.*has a bad"),
    ],
)
def test_meta_structure(store, change, pattern):
    edit_meta(store, change)
    with pytest.raises(StoreError, match=pattern):
        SkeletonStore(store)


def test_member_of_another_dtype(store):
    edit_index(store, field__keypoint__offset=lambda a: a.astype(np.float64))
    refused(store, r"member field\.keypoint\.offset\.npy is float64")


def test_extra_compressed_member_is_never_read(store):
    """A few hundred KB that inflate to 256 MB: refused from the zip directory alone."""
    with zipfile.ZipFile(store / "index.npz", "a", zipfile.ZIP_DEFLATED) as z:
        with z.open("extra.npy", "w", force_zip64=True) as f:
            zeros = bytes(1 << 24)
            for _ in range(16):
                f.write(zeros)
    assert (store / "index.npz").stat().st_size < 2e6
    tracemalloc.start()
    try:
        refused(store, r"members \['extra\.npy'\] are not part of the format")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # the 256 MB member was not inflated


def test_member_declaring_a_huge_array(store):
    """A defined member whose header asks for 10^9 labels: refused before it is read."""
    with np.load(store / "index.npz") as z:
        index = {k: z[k] for k in z.files}
    with zipfile.ZipFile(store / "index.npz", "w") as z:
        for key, value in index.items():
            with z.open(f"{key}.npy", "w") as f:
                if key == "col.label":
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": "<i8", "fortran_order": False, "shape": (10**9,)}
                    )
                else:
                    np.lib.format.write_array(f, value)
    refused(store, r"member col\.label\.npy is int64 \(1000000000,\)")


def test_nan_coordinates_refused_when_the_sample_is_read(store):
    raw = bytearray((store / "arrays.bin").read_bytes())
    kp = np.frombuffer(raw, np.float32, count=3000)  # sample 0 (1, 40, 25, 3) at offset 0
    kp = kp.copy()
    kp[3 * 25 * 5 + 3 * 7] = np.nan  # frame 5, joint 7
    raw[:12000] = kp.tobytes()
    (store / "arrays.bin").write_bytes(raw)
    edit_index(store, field__keypoint__crc=set_row(0, zlib.crc32(kp.tobytes())))
    s = SkeletonStore(store)  # opens: the values are checked where a sample is read
    where = r"arrays\.bin: sample 0 \('toy_c0_000'\): "
    with pytest.raises(AnnotationError, match=where + "non-finite coordinate at body 0, frame 5"):
        s[0]["keypoint"]
    assert s[1]["keypoint"].shape == (1, 40, 25, 3)


def test_huge_label_in_a_pickle_without_a_class_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SKELACT_CACHE", str(tmp_path / "cache"))
    data = toy_annotations(num_classes=2, per_class=2)
    data.pop("classes", None)
    data["annotations"][1]["label"] = 3 * 10**8
    pkl = tmp_path / "big.pkl"
    pkl.write_bytes(pickle.dumps(data, protocol=2))
    for load in (load_annotations, open_annotations):
        with pytest.raises(AnnotationError, match=r"big\.pkl: sample 'toy_c0_001': label 3000"):
            load(pkl)


def test_pickle_classes_must_be_names(tmp_path):
    data = toy_annotations(num_classes=2, per_class=2)
    data["classes"] = "abc"
    pkl = tmp_path / "abc.pkl"
    pkl.write_bytes(pickle.dumps(data))
    with pytest.raises(AnnotationError, match=r"abc\.pkl: 'classes' must be a list of names"):
        load_annotations(pkl)


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda a: a.update(keypoint=np.zeros((1, 0, 25, 3), np.float32), total_frames=0),
         r"sample 'toy_c0_003'.* no frames"),
        (lambda a: a.update(keypoint_score=None),
         r"sample 'toy_c0_003': keypoint_score must be an array of shape \(1, 40, 25\)"),
        (lambda a: a.update(frame_dir=123), r"sample 123: frame_dir must be a string, got int"),
    ],
)  # fmt: skip
def test_a_pickle_sample_refused_by_name_on_conversion(tmp_path, change, pattern):
    """A 0-frame sample ("not a readable pickle": a zero-size array could not be written), a
    keypoint_score of None (an AttributeError traceback), a frame_dir of 123 (converted into a
    store that was then refused as corrupt): each refused naming the sample."""
    data = toy_annotations(num_classes=2, per_class=4)
    change(data["annotations"][3])
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(AnnotationError, match=pattern):
        open_annotations(tmp_path / "bad.pkl")


def test_zero_size_fields_are_stored_and_orphans_of_killed_writers_removed(tmp_path):
    """An empty extra array (bbox of 0 boxes) is stored as such; a half-written store left by
    a killed writer (.NAME.store-tmpPID of a process that is gone) is removed by the next."""
    data = toy_annotations(num_classes=2, per_class=4)
    data["annotations"][1]["bbox"] = np.zeros((0, 4), np.float32)
    orphan = tmp_path / ".toy.store.store-tmp999999999"  # no such process
    orphan.mkdir()
    (orphan / "arrays.bin").write_bytes(b"x" * 100)
    save_annotations(data, tmp_path / "toy.store")
    assert not orphan.exists()
    got = open_annotations(tmp_path / "toy.store")[1]["bbox"]
    assert got.shape == (0, 4) and got.dtype == np.float32
