"""Knowledge distillation (trainer.distill): the loss, and a student taught by a real teacher."""

import json

import pytest
import torch
from torch.nn import functional as F

from skelact.config import compose_config
from skelact.data.formats.annotations import save_annotations
from skelact.distill import distill_loss
from skelact.train import train
from tests.conftest import toy_annotations
from tests.test_train import FAST, SPLITS


def test_distill_loss_is_the_tempered_kl():
    torch.manual_seed(0)
    logits, teacher = torch.randn(6, 5), torch.log_softmax(torch.randn(6, 5), -1)
    t = 3.0
    p = torch.softmax(teacher / t, -1)
    expected = (p * (torch.log(p) - F.log_softmax(logits / t, -1))).sum(1).mean() * t * t
    torch.testing.assert_close(distill_loss(logits, teacher, t), expected)
    # a student that already says what the teacher says has nothing to learn
    assert distill_loss(teacher.clone(), teacher, t).abs().item() < 1e-6


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A trained teacher run directory and its annotation file."""
    tmp = tmp_path_factory.mktemp("kd")
    toy = save_annotations(toy_annotations(num_classes=4, per_class=30, frames=40), tmp / "t.pkl")
    cfg = compose_config([f"data.ann_file={toy}", *SPLITS, *FAST, "trainer.epochs=8"])
    metrics = train(cfg, tmp / "teacher")
    assert metrics["top1"] >= 0.8
    return tmp / "teacher", toy


@pytest.mark.parametrize("online", [False, True])
def test_student_learns_from_the_teacher_alone(teacher_run, tmp_path, online):
    """weight 1: no label reaches the student except through the teacher's soft targets, so
    it learns only if they are the right sample's (a misaligned row would teach noise)."""
    teacher, toy = teacher_run
    cfg = compose_config(
        [f"data.ann_file={toy}", *SPLITS, *FAST, "trainer.epochs=8", "seed=1",
         f"trainer.distill.teacher={teacher}", "trainer.distill.weight=1.0",
         f"trainer.distill.online={online}"]
    )  # fmt: skip
    metrics = train(cfg, tmp_path)
    assert metrics["top1"] >= 0.7  # chance is 0.25
    report = json.loads((tmp_path / "metrics.json").read_text())["distill"]
    assert report["teacher_checkpoint"] == str(teacher / "checkpoints" / "last.pt")
    assert report["weight"] == 1.0
    if not online:  # scored before training
        assert report["teacher_train_top1"] >= 0.8


def test_teacher_of_other_classes_or_missing_is_refused(teacher_run, tmp_path):
    teacher, toy = teacher_run
    base = [f"data.ann_file={toy}", *SPLITS, *FAST, "trainer.epochs=1"]
    cfg = compose_config([*base, "data.num_classes=6", f"trainer.distill.teacher={teacher}"])
    with pytest.raises(SystemExit, match="has 4 classes, this run 6"):
        train(cfg, tmp_path / "a")
    cfg = compose_config([*base, f"trainer.distill.teacher={tmp_path / 'none'}"])
    with pytest.raises(SystemExit, match="none.*does not exist"):
        train(cfg, tmp_path / "b")
    # online, the teacher must read what the student reads: here 20 frames, not 16
    cfg = compose_config(
        [*base, "data.skeleton.clip_len=20", f"trainer.distill.teacher={teacher}",
         "trainer.distill.online=true"]
    )  # fmt: skip
    with pytest.raises(SystemExit, match="reads other inputs"):
        train(cfg, tmp_path / "c")
