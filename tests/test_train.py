"""Training end to end: learning, determinism, resume after kill -9, DDP, eval."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from skelact.config import compose_config
from skelact.data.formats.annotations import save_annotations
from skelact.data.run import Data
from skelact.evaluate import evaluate_checkpoint
from skelact.optim import make_optimizer
from skelact.runtime import native_bf16
from skelact.train import train
from tests.conftest import toy_annotations

SPLITS = ["data.train_split=train", "data.test_split=test"]
FAST = [
    "trainer.num_workers=0",
    "trainer.progress=false",
    "data.skeleton.clip_len=16",
    "data.skeleton.test_clips=2",
    "model.core.hidden=64",
    "model.skeleton.hidden=64",
    "model.skeleton.embed=64",
]


def run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "skelact.train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "toy.pkl"
    return save_annotations(toy_annotations(num_classes=4, per_class=40, frames=40), path)


def test_tiny_run_learns_and_writes_run_dir(toy_file, tmp_path, caplog):
    cfg = compose_config([f"data.ann_file={toy_file}", *SPLITS, *FAST, "trainer.epochs=12"])
    with caplog.at_level("INFO", logger="skelact"):
        metrics = train(cfg, tmp_path)
    assert metrics["top1"] >= 0.8  # chance is 0.25
    for name in (
        "config.yaml",
        "train_log.csv",
        "metrics.json",
        "predictions.csv",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (tmp_path / name).is_file(), name
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert list(log["epoch"]) == list(range(1, 13))
    assert log["loss"].iloc[-1] < log["loss"].iloc[0]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["num_samples"] == 40 and 0 <= saved["mean_class_accuracy"] <= 1
    env = saved["environment"]  # precision auto: bfloat16 exactly where the CPU has it
    assert env["training_dtype"] == ("bfloat16" if native_bf16() else "float32")
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    units = " ".join(env["cpu_bf16_flags"]) or "none"
    assert f"torch {torch.__version__}, CPU {env['cpu']}" in caplog.text
    assert f"; bfloat16 units: {units})" in caplog.text
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert (preds["label"] == preds["pred"]).mean() == pytest.approx(saved["top1"])

    # skelact eval on the same checkpoint reproduces the metrics
    out = tmp_path / "eval"
    again = evaluate_checkpoint([f"ckpt={tmp_path / 'checkpoints/last.pt'}", f"out_dir={out}"])
    assert again["top1"] == pytest.approx(saved["top1"])
    assert (out / "confusion_matrix.png").is_file()


def test_same_seed_same_result(toy_file, tmp_path):
    args = [f"data.ann_file={toy_file}", *SPLITS, *FAST, "trainer.epochs=2", "seed=3"]
    a = train(compose_config(args), tmp_path / "a")
    stale = tmp_path / "b/checkpoints/best.pt"  # from an earlier run in the same directory
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    b = train(compose_config(args), tmp_path / "b")
    assert a == b
    wa = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # no validation split: best.pt is the final model, not the stale file
    assert stale.read_bytes() == (tmp_path / "b/checkpoints/last.pt").read_bytes()


def test_classes_beyond_the_table_get_index_names(toy_file):
    cfg = compose_config([f"data.ann_file={toy_file}", *SPLITS, "data.num_classes=6"])
    data = Data(cfg)
    assert data.num_classes == 6
    assert data.classes == ["class0", "class1", "class2", "class3", "4", "5"]


@pytest.mark.parametrize("ema", [0, 2])
def test_resume_after_kill_matches_uninterrupted_run(toy_file, tmp_path, ema):
    """kill -9 after two epochs, resume: the same weights and metrics as a run never stopped
    (with trainer.ema_epochs the average and the trained weights both carry over)."""
    epochs = 6
    args = [
        f"data.ann_file={toy_file}",
        *SPLITS,
        *FAST,
        f"trainer.epochs={epochs}",
        "trainer.batch_size=8",
        "trainer.num_workers=2",
        f"trainer.ema_epochs={ema}",
    ]
    full = run_cli([*args, f"hydra.run.dir={tmp_path / 'full'}"])
    assert full.wait(timeout=300) == 0, full.stdout.read()

    killed_dir = tmp_path / "killed"
    proc = run_cli([*args, f"hydra.run.dir={killed_dir}"], start_new_session=True)
    log = killed_dir / "train_log.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9, DataLoader workers included
    proc.wait()
    done = len(pd.read_csv(log))
    assert 2 <= done < epochs and not (killed_dir / "metrics.json").exists()

    resumed = run_cli([*args, f"hydra.run.dir={killed_dir}", "trainer.resume=true"])
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    a = torch.load(tmp_path / "full/checkpoints/last.pt", weights_only=False)
    b = torch.load(killed_dir / "checkpoints/last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == epochs
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    if ema:
        assert all(torch.equal(a["trained_model"][k], b["trained_model"][k]) for k in a["model"])
    assert json.loads((tmp_path / "full/metrics.json").read_text()) == json.loads(
        (killed_dir / "metrics.json").read_text()
    )
    assert len(pd.read_csv(killed_dir / "train_log.csv")) == epochs


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_process_ddp_on_cpu(toy_file, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [
        "torchrun",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "skelact.train",
        f"data.ann_file={toy_file}",
        *SPLITS,
        *FAST,
        "trainer.epochs=8",
        "trainer.batch_size=16",
        "trainer.device=cpu",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "world size 2" in res.stdout + res.stderr
    log = pd.read_csv(run_dir / "train_log.csv")
    assert len(log) == 8
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["top1"] > 0.5  # chance 0.25


def test_ensemble_logs_the_mean_of_its_stream_losses(toy_file):
    """The default five-stream ensemble trains on the sum of its streams' losses; the logged
    loss is their mean (one batch, lr 0, the same dropout draws for both; float32, so that
    the forward pass below is the same computation)."""
    from skelact.data.run import make_loader
    from skelact.engine import split_batch, train_one_epoch
    from skelact.models.recognizer import build_recognizer
    from skelact.optim import cosine_with_warmup

    cfg = compose_config([f"data.ann_file={toy_file}", *SPLITS, *FAST, "trainer.batch_size=256",
                          "trainer.precision=fp32"])  # fmt: skip
    data = Data(cfg)
    dataset, specs = data.dataset(cfg.data, "train", train=True)
    loader = make_loader(dataset, cfg.trainer, False)
    net = build_recognizer(cfg.model, data.streams, data.num_classes, specs)
    opt = torch.optim.AdamW(net.parameters(), lr=0.0, weight_decay=0.0)
    torch.manual_seed(5)
    logged = train_one_epoch(net, loader, opt, cosine_with_warmup(opt, 1, 0), "cpu",
                             data.streams, cfg.trainer, 0, show=False)["loss"]  # fmt: skip
    torch.manual_seed(5)
    inputs, labels, _ = split_batch(next(iter(loader)), data.streams, "cpu")
    out = net.train()(inputs)
    losses = [torch.nn.functional.cross_entropy(x, labels, label_smoothing=0.1).item()
              for x in out["streams"].values()]  # fmt: skip
    assert out["independent"] and len(losses) == 5
    assert logged == pytest.approx(sum(losses) / 5, rel=1e-5)


def test_default_fifth_stream_holds_each_joints_distances_and_heights(toy_file, tmp_path):
    """The default (modality=skeleton_5s): the fifth stream holds each joint's distance to,
    then its height above, every joint of its body (V channels each, then the partner's C),
    those of the joint stream's positions in the same clip; the five streams train together."""
    args = [f"data.ann_file={toy_file}", *SPLITS, *FAST]
    cfg = compose_config(args)
    assert cfg.modality.name == "skeleton_5s"
    dataset, specs = Data(cfg).dataset(cfg.data, "test", train=False)
    assert specs["skeleton_dist"]["channels"] == 25 + 25 + 3
    item = dataset[3]
    pos = item["skeleton_joint"][..., :3]  # (clips, M, T, V, 3)
    dist, height = item["skeleton_dist"][..., :25], item["skeleton_dist"][..., 25:50]
    assert torch.allclose(dist, torch.cdist(pos, pos), atol=1e-5)
    y = pos[..., 1]
    assert torch.allclose(height, y[..., :, None] - y[..., None, :], atol=1e-5)
    assert dist.abs().sum() > 0 and height.abs().sum() > 0
    metrics = train(compose_config([*args, "trainer.epochs=8"]), tmp_path)
    assert set(metrics["streams"]) == set(cfg.modality.streams) and len(metrics["streams"]) == 5
    assert metrics["top1"] >= 0.6  # chance 0.25


def test_run_environment_names_the_precision_and_the_cpu():
    from skelact.runtime import run_environment

    cpu = torch.device("cpu")
    assert run_environment("fp32", cpu)["training_dtype"] == "float32"
    assert run_environment("bf16", cpu)["training_dtype"] == "bfloat16"
    env = run_environment("auto", cpu)
    assert env["cpu_bf16_hardware"] == native_bf16()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if Path("/proc/cpuinfo").is_file():
        assert env["cpu"] and "model name" not in env["cpu"]
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
        assert env["cpu_bf16_flags"] == sorted(
            f for f in ("amx_bf16", "avx512_bf16") if f" {f}" in flags
        )


def test_cosine_schedule_with_warm_restarts():
    from skelact.optim import cosine_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plain = cosine_with_warmup(opt, 100, 10, 0.01).lr_lambdas[0]
    three = cosine_with_warmup(opt, 100, 10, 0.01, cycles=3).lr_lambdas[0]
    assert plain(0) == pytest.approx(0.1) and plain(9) == pytest.approx(1.0)
    assert plain(55) == pytest.approx(0.505) and plain(150) == pytest.approx(0.01)
    for step in range(10):  # the same warmup
        assert three(step) == plain(step)
    # three decays of 30 steps: halfway at 25, 55, 85; back at the peak at 40 and 70
    for start in (10, 40, 70):
        assert three(start) == pytest.approx(1.0)
        assert three(start + 15) == pytest.approx(0.505)
        assert three(start + 29) < 0.02
    assert three(100) == pytest.approx(0.01) and three(130) == pytest.approx(0.01)


def test_optimizer_choice_takes_its_own_step():
    """trainer.optimizer: one step on loss p^2/2 from p=1 (gradient 1): AdamW moves p by lr
    (plus its decoupled decay), SGD with Nesterov momentum 0.9 by lr x (1 + 0.9)."""
    steps = {}
    for name in ("adamw", "sgd"):
        tcfg = compose_config([f"trainer.optimizer={name}", "trainer.lr=0.1"]).trainer
        p = torch.nn.Parameter(torch.tensor([1.0]))
        opt = make_optimizer([p], tcfg)
        (p**2 / 2).sum().backward()
        opt.step()
        steps[name] = p.item()
    assert steps["adamw"] == pytest.approx(1 * (1 - 0.1 * 0.01) - 0.1, abs=1e-6)
    assert steps["sgd"] == pytest.approx(1 - 0.1 * (1 + 0.9) - 0.1 * 0.01 * 1.9, abs=1e-6)
    with pytest.raises(ValueError, match="adamw or sgd"):
        make_optimizer([p], compose_config(["trainer.optimizer=adam"]).trainer)


def test_group_loader_slices_each_streams_channels_as_a_gather_would():
    """Each stream's channels are cut from the shared output by slices of their consecutive
    runs: the same values as gathering them one by one, in the given order."""
    import numpy as np

    from skelact.data.datasets import channel_runs, skeleton_group_loader

    assert channel_runs([0, 1, 2, 62, 63, 64]) == [(0, 3), (62, 65)]
    assert channel_runs([4, 1, 2, 3]) == [(4, 5), (1, 4)] and channel_runs([7]) == [(7, 8)]
    channels = {"a": [0, 1, 2, 9, 10], "b": [3, 4, 5, 6, 7, 8], "c": [8, 2, 9]}
    load = skeleton_group_loader(lambda r: {"keypoint": r["keypoint"] * 2}, channels)
    kp = np.random.default_rng(0).normal(size=(1, 2, 4, 5, 11)).astype(np.float32)
    out = load({"keypoint": kp}, np.random.default_rng(0))
    full = torch.from_numpy(kp * 2)
    for name, idx in channels.items():
        assert torch.equal(out[name], full[..., idx]), name


def test_min_steps_adds_epochs_to_a_small_training_set(toy_file, tmp_path, caplog):
    """trainer.min_steps: a training set of few batches gets enough epochs for that many
    optimizer steps; the schedule runs over all of them and the checkpoint says so."""
    args = [f"data.ann_file={toy_file}", *SPLITS, *FAST, "modality=skeleton", "model=bilstm"]
    data = Data(compose_config(args))
    per_epoch = -(-len(data.store.split("train")) // 32)  # batches of 32, the last one short
    cfg = compose_config([*args, "trainer.epochs=1", f"trainer.min_steps={3 * per_epoch - 1}"])
    with caplog.at_level("INFO", logger="skelact"):
        train(cfg, tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    said = [i for i, m in enumerate(lines) if m.startswith("trainer.min_steps=")]
    assert len(said) == 1 and lines[said[0]].endswith(f"3 epochs of {per_epoch} steps instead of 1")
    assert lines[said[0] - 2].startswith("training ")  # after the run's opening lines
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert len(log) == 3
    assert log["lr"].iloc[-1] < 0.2 * cfg.trainer.lr  # the cosine decay spans the 3 epochs
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ck["config"]["trainer"]["epochs"] == 3 and ck["epoch"] == 3


def test_weight_average_is_the_moving_average_of_the_steps():
    """WeightAverage: each float weight follows avg <- d avg + (1 - d) w with d = 1 - 1 /
    (epochs x steps), capped at (1 + n) / (10 + n) for the first updates; integer buffers
    are copied; applied() lends the average and gives the trained weights back."""
    from skelact.optim import WeightAverage

    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    weight = model[0].weight
    with torch.no_grad():
        weight.fill_(1.0)
    average = WeightAverage(model, epochs=2, steps_per_epoch=10)  # d = 0.95
    expected = 1.0
    for n, value in enumerate([3.0, -1.0, 0.5] + [2.0] * 60, start=1):
        with torch.no_grad():
            weight.fill_(value)
        model[1].num_batches_tracked += 1
        average.update()
        d = min(0.95, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert average.shadow["0.weight"].item() == pytest.approx(expected, rel=1e-5)
    assert 1.9 < expected < 2.0  # the cap has long given way to 0.95, which lags behind 2
    assert average.shadow["1.num_batches_tracked"].item() == 63
    with average.applied() as averaged:
        assert averaged[0].weight.item() == pytest.approx(expected, rel=1e-5)
    assert weight.item() == 2.0
    with pytest.raises(ValueError, match="epochs > 0"):
        WeightAverage(model, epochs=0, steps_per_epoch=10)


def test_ema_run_evaluates_and_saves_the_average(toy_file, tmp_path):
    """trainer.ema_epochs: the checkpoint's model is the average (not the trained weights),
    and the run's metrics are what that checkpoint scores."""
    cfg = compose_config(
        [f"data.ann_file={toy_file}", *SPLITS, *FAST, "trainer.epochs=3", "trainer.ema_epochs=1"]
    )
    metrics = train(cfg, tmp_path)
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ck["average_updates"] == 3 * -(-len(Data(cfg).store.split("train")) // 32)
    differ = [k for k in ck["model"] if not torch.equal(ck["model"][k], ck["trained_model"][k])]
    assert len(differ) > len(ck["model"]) // 2
    again = evaluate_checkpoint(
        [f"ckpt={tmp_path / 'checkpoints/last.pt'}", f"out_dir={tmp_path / 'e'}"]
    )
    assert again["top1"] == metrics["top1"]
    # metrics.json says which weights: last.pt's, after 3 epochs, averaged, no validation
    want = {"epoch": 3, "ema_epochs": 1.0, "best_val_top1": None}
    assert metrics["weights"].pop("checkpoint") == "checkpoints/last.pt"  # in the run directory
    assert Path(again["weights"].pop("checkpoint")) == tmp_path / "checkpoints/last.pt"
    assert metrics["weights"] == again["weights"] == want
    # the run's scores are the average's to the float, not the trained weights'
    import numpy as np

    ran, averaged = np.load(tmp_path / "scores.npy"), np.load(tmp_path / "e" / "scores.npy")
    np.testing.assert_allclose(ran, averaged, atol=1e-6)
    ck["model"] = ck["trained_model"]
    torch.save(ck, tmp_path / "trained.pt")
    evaluate_checkpoint([f"ckpt={tmp_path / 'trained.pt'}", f"out_dir={tmp_path / 't'}"])
    assert np.abs(np.load(tmp_path / "t" / "scores.npy") - ran).max() > 1e-4


def test_init_from_starts_from_the_trained_weights_with_a_fresh_classifier(
    toy_file, tmp_path, caplog
):
    """trainer.init_from: every tensor of the same name and shape comes from the checkpoint
    (a run of the same classes scores as that run did, before any training); a run of other
    classes gets a fresh classifier only; another layout, or no checkpoint, is refused."""
    import numpy as np

    base = [*SPLITS, *FAST]
    first = tmp_path / "first"
    train(compose_config([f"data.ann_file={toy_file}", *base, "trainer.epochs=3"]), first)
    trained = torch.load(first / "checkpoints" / "last.pt", weights_only=True)["model"]

    same = tmp_path / "same"
    with caplog.at_level("INFO", logger="skelact"):
        metrics = train(compose_config(
            [f"data.ann_file={toy_file}", *base, "trainer.epochs=0", f"trainer.init_from={first}"]
        ), same)  # fmt: skip
    assert metrics["init_from"]["loaded"] == len(trained) and metrics["init_from"]["fresh"] == []
    assert f"trainer.init_from: {len(trained)} tensors from {first}" in caplog.text
    assert "last.pt (the same classes); fresh: none" in caplog.text
    np.testing.assert_array_equal(np.load(same / "scores.npy"), np.load(first / "scores.npy"))

    other_file = save_annotations(
        toy_annotations(num_classes=3, per_class=8, seed=1), tmp_path / "three.pkl"
    )
    other = tmp_path / "other"
    with caplog.at_level("INFO", logger="skelact"):
        metrics = train(compose_config(
            [f"data.ann_file={other_file}", *base, "trainer.epochs=0", f"trainer.init_from={first}"]
        ), other)  # fmt: skip
    assert "last.pt (other classes: a new classifier); fresh: heads." in caplog.text
    got = torch.load(other / "checkpoints" / "best.pt", weights_only=True)["model"]  # epochs=0
    # the final weights too, which metrics.json names (and eval and init_from take)
    last = torch.load(other / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert metrics["weights"]["checkpoint"] == "checkpoints/last.pt"
    assert all(torch.equal(last[k], got[k]) for k in got)
    fresh = [k for k in got if got[k].shape != trained[k].shape]
    assert fresh and all(k.startswith("heads.") for k in fresh), fresh
    assert sorted(fresh) == metrics["init_from"]["fresh"] == metrics["init_from"]["unused"]
    assert all(torch.equal(got[k], trained[k]) for k in got if k not in fresh)
    assert metrics["init_from"]["loaded"] == len(got) - len(fresh)

    # the same number of classes under other names: the class layers start fresh all the same
    renamed = toy_annotations(num_classes=4, per_class=8, seed=2)
    renamed["classes"] = [f"other{c}" for c in range(4)]
    metrics = train(compose_config(
        [f"data.ann_file={save_annotations(renamed, tmp_path / 'renamed.pkl')}", *base,
         "trainer.epochs=0", f"trainer.init_from={first}"]
    ), tmp_path / "renamed")  # fmt: skip
    assert metrics["init_from"]["fresh"] == sorted(fresh)
    assert metrics["init_from"]["same_classes"] is False
    with pytest.raises(SystemExit, match="generic joint layout, this run's data is ntu25"):
        train(compose_config(
            [f"data.ann_file={toy_file}", *base, "trainer.epochs=0", "data.layout=ntu25",
             f"trainer.init_from={first}"]
        ), tmp_path / "layout")  # fmt: skip
    with pytest.raises(SystemExit, match="trainer.init_from: .*nowhere.* does not exist"):
        train(compose_config(
            [f"data.ann_file={toy_file}", *base, f"trainer.init_from={tmp_path / 'nowhere'}"]
        ), tmp_path / "missing")  # fmt: skip


class _Niceness(torch.utils.data.Dataset):
    """Each item is the niceness of the process that made it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"nice": os.nice(0)}


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no process priorities here")
@pytest.mark.parametrize("nice", [0, 7])
def test_loader_workers_run_at_the_configured_niceness(nice):
    """trainer.worker_nice=N: the DataLoader workers run N nicer than the training process."""
    from omegaconf import OmegaConf

    from skelact.data.run import make_loader

    tcfg = OmegaConf.create({"batch_size": 2, "num_workers": 1, "worker_nice": nice})
    batch = next(iter(make_loader(_Niceness(), tcfg, False, eval_mode=True)))
    assert batch["nice"].tolist() == [os.nice(0) + nice] * 2


def test_a_run_shorter_than_twice_its_warmup_still_decays(toy_file, tmp_path):
    """trainer.warmup_epochs=2 (the default) in a 2-epoch run: warm-up over the first epoch,
    decay over the second, so the run ends near the floor, not at the peak learning rate."""
    cfg = compose_config([f"data.ann_file={toy_file}", *SPLITS, *FAST, "trainer.epochs=2"])
    train(cfg, tmp_path)
    lr = pd.read_csv(tmp_path / "train_log.csv")["lr"]
    peak = cfg.trainer.lr
    assert lr.iloc[0] == pytest.approx(peak)  # the warm-up's end
    assert lr.iloc[1] < 0.05 * peak  # min_lr_ratio 0.01 of it at the last step


def test_ctrl_c_ends_training_in_one_line_that_says_how_to_resume(toy_file, tmp_path):
    run = tmp_path / "run"
    args = [f"data.ann_file={toy_file}", *SPLITS, *FAST, "trainer.epochs=200"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "skelact.cli", "train", *args, f"hydra.run.dir={run}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # as a terminal's foreground job gets it: SIGINT not ignored, even where the suite
        # itself runs as a background job (which starts its children with SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log, deadline = run / "train_log.csv", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:  # an epoch done
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "skelact train: interrupted; run it again with trainer.resume=true" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    # the same directory again without resume: said, then replaced
    again = run_cli([*args, "trainer.epochs=1", f"hydra.run.dir={run}"])
    assert again.wait(timeout=300) == 0
    assert f"{run} holds an earlier run" in again.stdout.read()


def test_resume_refuses_another_model_or_a_checkpoint_past_the_epochs(toy_file, tmp_path, caplog):
    base = [f"data.ann_file={toy_file}", *SPLITS, *FAST, "trainer.epochs=2"]
    train(compose_config(base), tmp_path)
    again = [*base, "trainer.resume=true"]
    # another setting: refused by name before anything loads (a changed lr was recorded in
    # config.yaml but not used, the optimizer's state bringing the old one back; sgd for adamw
    # was a KeyError traceback; mixup or dropout were taken for the rest of the run, silently)
    with pytest.raises(SystemExit, match=r"last.pt was trained with other settings \("
                       r"model.core.hidden: 64 -> 32\): resume with the run's own"):  # fmt: skip
        train(compose_config([*again, "model.core.hidden=32"]), tmp_path)
    with pytest.raises(SystemExit, match=r"settings \(trainer.lr: 0.001 -> 0.0001; "
                       r"trainer.optimizer: 'adamw' -> 'sgd'\)"):  # fmt: skip
        train(compose_config([*again, "trainer.lr=0.0001", "trainer.optimizer=sgd"]), tmp_path)
    assert "lr: 0.001" in (tmp_path / "config.yaml").read_text()  # not rewritten
    with pytest.raises(SystemExit, match=r"last.pt is at epoch 2, past trainer.epochs=1: resume"):
        train(compose_config([*again, "trainer.epochs=1"]), tmp_path)
    with caplog.at_level("WARNING", logger="skelact"):  # longer: allowed, and said
        train(compose_config([*again, "trainer.epochs=3"]), tmp_path)
    assert "was trained for trainer.epochs=2, this run asks 3" in caplog.text
    assert len(pd.read_csv(tmp_path / "train_log.csv")) == 3


def test_a_model_pretrained_on_the_test_samples_is_refused_and_recorded(toy_file, tmp_path, caplog):
    """trainer.init_from a model trained on a merge that holds the test split's samples: the
    run is refused (as a shared split is), or with data.allow_test_overlap=true warned and
    counted in metrics.json's "lineage", through a chain of runs and in `skelact eval`; a
    model trained on the merge's copy of the training split alone passes with a count of 0."""
    import numpy as np

    from skelact.data.formats.annotations import merge_annotations, open_annotations

    other = toy_annotations(num_classes=3, per_class=8, seed=3)
    other = save_annotations(other, tmp_path / "b.pkl")
    merged = tmp_path / "all.store"
    merge_annotations([toy_file, other], merged, holdout=0.1)
    store, toy = open_annotations(merged), open_annotations(toy_file)
    test = toy.names[toy.split("test")].astype(str)
    held = {n.removeprefix("toy/") for n in store.names[store.split("val")].astype(str)}
    want = len(set(test) - held)
    assert 0 < want < len(test)  # some test samples were held out of "train": counted apart

    base = [*FAST, "trainer.epochs=1"]
    pre = tmp_path / "pre"
    train(compose_config([f"data.ann_file={merged}", "data.train_split=train",
                          "data.test_split=val", *base]), pre)  # fmt: skip
    tune = [f"data.ann_file={toy_file}", *SPLITS, *base, f"trainer.init_from={pre}"]
    with pytest.raises(SystemExit, match=(
        rf"trainer.init_from={pre}/checkpoints/last.pt was trained on {merged}'s split train, "
        rf"which holds {want} of the 40 samples of data.test_split=test \(e.g. toy_"
    )):  # fmt: skip
        train(compose_config(tune), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # refused before anything was written

    with caplog.at_level("WARNING", logger="skelact"):
        metrics = train(compose_config([*tune, "data.allow_test_overlap=true"]), tmp_path / "a")
    assert "(allowed by data.allow_test_overlap)" in caplog.text
    (seen,) = metrics["lineage"]
    assert seen["test_samples"] == want and seen["train_split"] == "train"
    assert seen["note"] == "merged from this file, as toy/<name>" and seen["example"] in test
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["lineage"] == [seen]

    # a run started from that one: the pretraining two steps back is found and refused too
    chain = [f"data.ann_file={toy_file}", *SPLITS, *base, f"trainer.init_from={tmp_path / 'a'}"]
    with pytest.raises(SystemExit, match=rf"trainer.init_from -> trainer.init_from={pre}/"):
        train(compose_config(chain), tmp_path / "b")
    # skelact eval of the fine-tuned model warns and records, it does not refuse
    evaluated = evaluate_checkpoint([f"ckpt={tmp_path / 'a'}", f"out_dir={tmp_path / 'e'}"])
    assert [s["test_samples"] for s in evaluated["lineage"]] == [want]

    # pretrained on the merge's copy of the training split only: no test sample seen
    clean = tmp_path / "clean"
    train(compose_config([f"data.ann_file={merged}", "data.train_split=toy/train",
                          "data.test_split=toy/test", *base]), clean)  # fmt: skip
    ok = train(compose_config([*tune[:-1], f"trainer.init_from={clean}"]), tmp_path / "ok")
    assert [(s["test_samples"], s["example"]) for s in ok["lineage"]] == [(0, None)]
    # started from a model of another file: listed, not counted
    third = save_annotations(toy_annotations(num_classes=4, per_class=40, frames=40, seed=4),
                             tmp_path / "c.pkl")  # fmt: skip
    far = train(compose_config([f"data.ann_file={third}", *SPLITS, *base,
                                f"trainer.init_from={clean}"]), tmp_path / "far")  # fmt: skip
    assert far["lineage"][0]["test_samples"] is None
    assert far["lineage"][0]["note"] == (
        f"trained on another file ({merged}, a merge of {toy_file}, {other}, none of them "
        f"{third}): its samples cannot be matched by name"
    )
    assert np.isin(test, list(held)).sum() == len(test) - want


def test_a_new_run_in_an_earlier_runs_folder_leaves_none_of_its_outputs(tmp_path, caplog):
    """A run of 0 epochs (or of one stream) into a folder of an earlier run kept its
    train_log.csv, curves and stream scores beside the new metrics; an earlier fusion fit
    would have been taken as the new run's. A resume keeps everything."""
    from omegaconf import OmegaConf

    from skelact.epochs import RUN_OUTPUTS, replace_earlier_run

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"old")
    (tmp_path / "fusion_fit").mkdir()
    (tmp_path / "fusion_fit" / "stream_scores.npz").write_bytes(b"old")
    for name in ("train_log.csv", "stream_scores.npz", "metrics.json", "training_curves.png"):
        (tmp_path / name).write_text("old")
    replace_earlier_run(tmp_path, OmegaConf.create({"resume": True}))
    assert (tmp_path / "train_log.csv").is_file() and (tmp_path / "fusion_fit").is_dir()
    with caplog.at_level("WARNING", logger="skelact"):
        replace_earlier_run(tmp_path, OmegaConf.create({"resume": False}))
    assert "holds an earlier run: its checkpoints and outputs are removed" in caplog.text
    assert not any((tmp_path / name).exists() for name in RUN_OUTPUTS)


def test_zero_epochs_in_an_earlier_runs_folder_saves_its_own_model(toy_file, tmp_path):
    """trainer.epochs=0 into the folder of a trained run: the earlier last.pt stayed and was
    copied to best.pt, so the checkpoints were the old run's beside the new run's metrics."""
    base = [f"data.ann_file={toy_file}", *SPLITS, *FAST]
    train(compose_config([*base, "trainer.epochs=1"]), tmp_path)
    train(compose_config([*base, "trainer.epochs=0"]), tmp_path)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert last["epoch"] == best["epoch"] == 0
    assert not (tmp_path / "train_log.csv").exists()  # the earlier run's epoch is not listed
