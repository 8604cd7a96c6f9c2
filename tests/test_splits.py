"""Split hygiene: splits that share samples or repeat a name are refused by name (each overlap
with its explicit override), and `skelact eval` counts the evaluated samples a checkpoint was
trained on (toy files, and the real SBU folds)."""

from __future__ import annotations

import json
import logging

import pytest

from skelact.config import compose_config
from skelact.data.formats.annotations import save_annotations
from skelact.data.formats.store import SkeletonStore
from skelact.data.run import Data
from skelact.data.sources.text_importers import prepare_sbu
from skelact.evaluate import evaluate_checkpoint
from skelact.train import train
from tests.conftest import SHARED_DATA, shared_data, toy_annotations
from tests.test_train import FAST, SPLITS


def toy_file(tmp_path, **splits):
    data = toy_annotations(num_classes=3, per_class=8, frames=20)
    data["split"].update(splits)
    return data, save_annotations(data, tmp_path / "toy.pkl")


def check(path, *overrides):
    cfg = compose_config([f"data.ann_file={path}", *SPLITS, *FAST, *overrides])
    Data(cfg).check_splits(cfg.data, str(path))


def test_test_split_inside_train_split_is_refused_unless_allowed(tmp_path, caplog):
    data, path = toy_file(tmp_path)
    data["split"]["test"] += data["split"]["train"][:3]
    path = save_annotations(data, tmp_path / "leaky.pkl")
    with pytest.raises(SystemExit, match=r"3 sample\(s\) of data.test_split=test are also in "
                       r"data.train_split=train .*data.allow_test_overlap=true"):  # fmt: skip
        check(path)
    args = [f"data.ann_file={path}", *SPLITS, *FAST, "trainer.epochs=1"]
    with caplog.at_level(logging.WARNING, "skelact"):
        metrics = train(compose_config([*args, "data.allow_test_overlap=true"]), tmp_path / "r")
    assert metrics["train_overlap"] == 3 and metrics["num_samples"] == 6 + 3
    assert json.loads((tmp_path / "r/metrics.json").read_text())["train_overlap"] == 3
    assert "3 of the 9 evaluated samples of test are in the model's training split" in caplog.text


def test_val_split_equal_to_test_split_is_refused_unless_allowed(tmp_path):
    data, path = toy_file(tmp_path)
    with pytest.raises(SystemExit, match=r"6 sample\(s\) of data.test_split=test are also in "
                       "data.val_split=test.*chosen on the test split"):  # fmt: skip
        check(path, "data.val_split=test", "data.allow_val_overlap=true")
    check(path, "data.val_split=test", "data.allow_val_test_overlap=true")  # deliberate


@pytest.mark.parametrize("role", ["train", "test"])
def test_a_name_repeated_in_a_split_is_refused(tmp_path, role):
    data, path = toy_file(tmp_path)
    name = data["split"][role][1]
    data["split"][role] += [name] * 4  # named 5 times
    path = save_annotations(data, tmp_path / "repeated.pkl")
    with pytest.raises(SystemExit, match=f"split {role} names 1 sample.*{name} 5 times"):
        check(path)


@pytest.fixture(scope="module")
def sbu_run(tmp_path_factory):
    """A one-epoch SBU fold-1 model (small) and its store."""
    shared_data("sbu")
    root = tmp_path_factory.mktemp("sbu")
    store = root / "sbu.store"
    prepare_sbu(SHARED_DATA / "sbu", store, verbose=False)
    cfg = compose_config(
        ["data=sbu", f"data.ann_file={store}", *FAST, "trainer.epochs=1", "trainer.threads=1"]
    )
    train(cfg, root / "run")
    return store, root / "run/checkpoints/last.pt"


def test_sbu_dev_val_as_test_split_is_refused(sbu_run):
    store, _ = sbu_run
    with pytest.raises(SystemExit, match=r"52 sample\(s\) of data.test_split=fold1_dev_val"):
        cfg = compose_config(
            ["data=sbu", f"data.ann_file={store}", "data.test_split=fold1_dev_val"]
        )
        Data(cfg).check_splits(cfg.data, str(store))


def test_eval_counts_the_samples_a_checkpoint_trained_on(sbu_run, tmp_path, caplog):
    store, ckpt = sbu_run
    with caplog.at_level(logging.WARNING, "skelact"):
        other = evaluate_checkpoint([f"ckpt={ckpt}", f"out_dir={tmp_path / 'f2'}",
                                     "data.test_split=fold2_test"])  # fmt: skip
    # fold 1 trains on folds 2-5: every fold-2 test sample was trained on
    assert other["train_overlap"] == other["num_samples"] == 52
    assert json.loads((tmp_path / "f2/metrics.json").read_text())["train_overlap"] == 52
    assert "52 of the 52 evaluated samples of fold2_test are in the model's training split " \
        "fold1_train" in caplog.text  # fmt: skip
    own = evaluate_checkpoint([f"ckpt={ckpt}", f"out_dir={tmp_path / 'f1'}"])
    assert own["train_overlap"] == 0 and own["num_samples"] == 55


def test_eval_refuses_a_name_repeated_in_the_evaluated_split(sbu_run, tmp_path):
    store, ckpt = sbu_run
    data = SkeletonStore(store).to_dict()
    name = data["split"]["fold1_test"][0]
    data["split"]["fold1_test"] += [name] * 4
    path = save_annotations(data, tmp_path / "repeated.pkl")
    with pytest.raises(SystemExit, match=f"split fold1_test names 1 sample.*{name} 5 times"):
        evaluate_checkpoint([f"ckpt={ckpt}", f"out_dir={tmp_path}", f"data.ann_file={path}"])
