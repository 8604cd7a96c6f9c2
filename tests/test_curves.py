"""Training curves (training_curves.png after every epoch) and TensorBoard scalars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skelact import epochs
from skelact import train as train_mod
from skelact.config import compose_config
from skelact.data.formats.annotations import save_annotations
from tests.conftest import toy_annotations


def test_curves_redrawn_each_epoch_and_tensorboard_scalars(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = toy_annotations(num_classes=3, per_class=12, frames=24)
    train = data["split"]["train"]
    data["split"].update(train=train[3:], val=train[:3])  # val carved from training data
    ann = save_annotations(data, tmp_path / "toy.pkl")
    drawn = []
    real = epochs.plot_training_curves

    def spy(history, path):
        drawn.append([dict(r) for r in history])
        return real(history, path)

    monkeypatch.setattr(epochs, "plot_training_curves", spy)
    cfg = compose_config(
        [
            f"data.ann_file={ann}",
            "data.train_split=train",
            "data.test_split=test",
            "data.val_split=val",
            "trainer.epochs=3",
            "trainer.eval_every=1",
            "trainer.threads=1",
            "trainer.num_workers=0",
            "trainer.progress=false",
            "trainer.tensorboard=true",
            "data.skeleton.clip_len=8",
        ]
    )
    run = tmp_path / "run"
    train_mod.train(cfg, run)
    assert [len(h) for h in drawn] == [1, 2, 3]  # redrawn after every epoch
    png = imread(run / "training_curves.png")
    assert png.shape[0] > 200 and png.shape[1] > 800 and png[..., :3].std() > 0.05
    log = pd.read_csv(run / "train_log.csv")
    assert log["val_top1"].notna().all()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for tag, column in (("train/loss", "loss"), ("train/lr", "lr"), ("val/val_top1", "val_top1")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 3]
        np.testing.assert_allclose([s.value for s in scalars], log[column], rtol=1e-5)
