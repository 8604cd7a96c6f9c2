"""The command line: every command explains itself; --modality is sugar for modality=."""

import argparse
import os
import re
import shutil
import subprocess
import sys

import pytest

from skelact.cli import build_parser
from skelact.config import modality_override

COMMANDS = [
    "demo",
    "prepare",
    "prepare ntu",
    "prepare nucla",
    "prepare utd-mhad",
    "prepare sbu",
    "prepare kard",
    "prepare msr-daily",
    "prepare features",
    "train",
    "eval",
    "convert",
    "predict",
    "export",
    "pose-model",
    "repack",
    "merge",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command.split(), "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: skelact {command}" in text and len(text) > 200


def test_every_registered_command_is_covered():
    # COMMANDS above (each tested for --help) must be exactly the parser's subcommands
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {c for c in COMMANDS if " " not in c}
    (src,) = [
        a for a in sub.choices["prepare"]._actions if isinstance(a, argparse._SubParsersAction)
    ]
    assert set(src.choices) == {c.split()[1] for c in COMMANDS if c.startswith("prepare ")}


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("skeleton", "modality=skeleton"),
        ("rgb+skeleton", "modality=rgb_skeleton"),
        ("skeleton+rgb", "modality=rgb_skeleton"),
        ("depth+skeleton+rgb", "modality=rgb_skeleton_depth"),
    ],
)
def test_modality_sugar(spec, expected):
    assert modality_override(spec) == expected


def test_unknown_modality_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        modality_override("audio")
    with pytest.raises(ValueError, match="unknown modality 'rgb\\+skeleton_4s'"):
        modality_override("rgb+skeleton_4s")  # no such config: refused, not guessed


@pytest.mark.parametrize(
    "spec, modality, model, streams",
    [
        ("skeleton_5s", "skeleton_5s", "bilstm_4s", 5),  # the default's own name
        ("skeleton_4s", "skeleton_4s", "bilstm_4s", 4),  # the default before 2026-12-05
        ("skeleton_2s", "skeleton_2s", "bilstm_4s", 2),
        ("skeleton", "skeleton", "bilstm", 1),  # the single-stream recipe, not bilstm_4s
        ("rgb+skeleton", "rgb_skeleton", "bilstm_4s", 6),  # rgb + the five skeleton streams
        ("skeleton+depth", "skeleton_depth", "bilstm_4s", 6),
    ],
)
def test_modality_chooses_inputs_and_their_model(spec, modality, model, streams):
    from skelact.config import compose_run, modality_overrides

    cfg, _ = compose_run(modality_overrides(spec))
    assert (cfg.modality.name, cfg.model.name) == (modality, model)
    assert len(cfg.modality.streams) == streams
    # a model the user names wins over the pairing
    given = ["model=stacked_bilstm"]
    cfg, _ = compose_run([*modality_overrides(spec, given), *given])
    assert (cfg.modality.name, cfg.model.name) == (modality, "stacked_bilstm")


def test_modality_given_twice_two_ways_is_refused():
    """--modality skeleton with modality=skeleton_4s trained the four streams on the single
    stream's model, neither recipe; the same modality both ways is fine."""
    from skelact.config import compose_run, modality_overrides

    with pytest.raises(ValueError, match="--modality skeleton and modality=skeleton_4s choose"):
        modality_overrides("skeleton", ["modality=skeleton_4s"])
    cfg, _ = compose_run([*modality_overrides("skeleton", ["modality=skeleton"]),
                          "modality=skeleton"])  # fmt: skip
    assert (cfg.modality.name, cfg.model.name) == ("skeleton", "bilstm")


def test_default_recipe_is_what_modality_skeleton_5s_chooses():
    from skelact.config import compose_run, modality_overrides

    default, _ = compose_run([])
    sugar, _ = compose_run(modality_overrides("skeleton_5s"))
    assert default == sugar


def test_train_help_lists_config_groups(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    assert "ntu60_xsub" in text and "rgb_skeleton" in text and "stacked_bilstm" in text


def test_missing_annotation_file_is_one_clear_line(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "skelact.cli", "eval", f"ckpt={tmp_path / 'nope.pt'}"],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0
    assert "nope.pt does not exist" in res.stderr and "Traceback" not in res.stderr


def test_export_command_writes_a_model_that_loads(ntu_ckpt, tmp_path, capsys):
    import skelact
    from skelact.cli import main

    main(["export", str(ntu_ckpt), "--onnx", str(tmp_path / "m.onnx")])
    assert "-> " + str(tmp_path / "m.onnx") in capsys.readouterr().out
    assert skelact.load(tmp_path / "m.onnx").contract.layout == "ntu25"
    with pytest.raises(SystemExit, match="reads a checkpoint"):
        main(["export", str(tmp_path / "m.onnx"), "--onnx", str(tmp_path / "again.onnx")])


def test_predict_needs_a_video_or_live(ntu_ckpt):
    from skelact.cli import main

    with pytest.raises(SystemExit, match="give a VIDEO, or --live SOURCE"):
        main(["predict", "--ckpt", str(ntu_ckpt)])


@pytest.mark.parametrize(
    "args, words",
    [
        (["v.mp4", "--window", "0"], "--window must be > 0 seconds, got 0.0"),
        (["v.mp4", "--stride", "-1"], "--stride must be > 0 seconds, got -1.0"),
        (["v.mp4", "--topk", "0"], "--topk and --max-people must be >= 1"),
        (["v.mp4", "--live", "0"], "give a VIDEO or --live SOURCE, not both"),
        (["--live", "0", "--json", "p.json"], "--json: for a VIDEO, not --live"),
        (["v.mp4", "--every", "1", "--out", "t.csv"], "--every, --out/--timeline: for --live"),
    ],
)
def test_predict_refuses_options_it_would_ignore_or_cannot_use(ntu_ckpt, args, words):
    from skelact.cli import main

    with pytest.raises(SystemExit, match=re.escape(words)):
        main(["predict", "--ckpt", str(ntu_ckpt), *args])


def test_train_prints_plain_lines_and_eval_finds_its_data_from_anywhere(tmp_path):
    """`skelact train`: skelact's lines only (no hydra timestamp, no matplotlib font cache
    note, even with an empty cache), a train.log, the annotation file stored absolute; `skelact
    eval` from another folder, with another data group, still finds it."""
    from skelact.checkpoints import load_checkpoint
    from skelact.data.formats.annotations import save_annotations
    from tests.conftest import ROOT, toy_annotations

    work, other = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), other.mkdir()
    data = toy_annotations(num_classes=3, per_class=8, frames=20)
    data["layout"] = "ntu25"
    save_annotations(data, work / "toy.store")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(tmp_path / "mpl")}

    def skelact(*args, cwd):
        cmd = [sys.executable, "-m", "skelact.cli", *args]
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stderr.splitlines() + res.stdout.splitlines()

    train_args = ["data=annotations", "data.ann_file=toy.store", "data.train_split=train",
                  "data.test_split=test", "trainer.epochs=1", "trainer.progress=false",
                  "trainer.num_workers=0", "data.skeleton.clip_len=8"]  # fmt: skip
    lines = skelact("train", *train_args, "hydra.run.dir=run", cwd=work)
    assert lines[0].startswith("training skeleton_joint+skeleton_bone+"), lines
    assert lines[-1].startswith("test: top1 "), lines
    assert not any("fontManager" in x or x.startswith("[20") for x in lines), lines
    assert "epoch 1/1 loss" in (work / "run" / "train.log").read_text()
    # the module torchrun starts (hydra's own logging): the same plain lines, a timed train.log
    cmd = [sys.executable, "-m", "skelact.train", *train_args, "hydra.run.dir=run2"]
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    module = res.stdout.splitlines()
    assert module[0].split(" -> ")[0] == lines[0].split(" -> ")[0], module
    assert module[-1].startswith("test: top1 "), module
    assert not any(x.startswith("[20") for x in module), module
    logged = (work / "run2" / "train.log").read_text().splitlines()
    assert all(re.match(r"20\d\d-\d\d-\d\d [\d:,]+ [a-z]", x) for x in logged), logged
    assert any(" epoch 1/1 loss" in x for x in logged), logged
    ckpt = work / "run" / "checkpoints" / "last.pt"
    assert load_checkpoint(ckpt)["config"]["data"]["ann_file"] == str(work / "toy.store")
    lines = skelact("eval", f"ckpt={ckpt}", "data=annotations", "data.test_split=train",
                    f"out_dir={other / 'ev'}", "trainer.progress=false", cwd=other)  # fmt: skip
    assert lines[-1].startswith("train: top1 ") and (other / "ev" / "metrics.json").is_file()
    # the run directory stands for its checkpoints/last.pt: the same scores, beside the run
    again = skelact("eval", f"ckpt={work / 'run'}", "data=annotations", "data.test_split=train",
                    "trainer.progress=false", cwd=other)  # fmt: skip
    assert again[-1].split(" -> ")[0] == lines[-1].split(" -> ")[0]
    assert (work / "run" / "eval_train" / "metrics.json").is_file()
    # another file's evaluation goes to a folder of its own, beside the first
    shutil.copytree(work / "toy.store", other / "copy.store")
    copy = f"data.ann_file={other / 'copy.store'}"
    skelact("eval", f"ckpt={work / 'run'}", copy, "data=annotations", "data.test_split=train",
            "trainer.progress=false", cwd=other)  # fmt: skip
    assert (work / "run" / "eval_copy_train" / "metrics.json").is_file()
    assert (work / "run" / "eval_train" / "metrics.json").is_file()


def test_live_timeline_goes_beside_the_checkpoints_outputs(tmp_path):
    from skelact.live import timeline_path

    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    path = timeline_path(ckpt, "videos/walk.mp4", when=0)
    assert path.parent == tmp_path / "run" / "live" and path.suffix == ".csv"
    assert path.name.startswith("walk_") and len(path.stem) == len("walk_2026-12-04_06-20-26")
    assert timeline_path(ckpt, "0").name.startswith("camera0_")
    onnx = timeline_path(tmp_path / "model.onnx", "rtsp://host/cam")
    assert onnx.parent == tmp_path / "live" and onnx.name.startswith("stream_")
    ckpt.parent.mkdir(parents=True)
    (ckpt.parent / "last.pt").write_bytes(b"")  # the run directory given: its own live/
    assert timeline_path(tmp_path / "run", "0").parent == tmp_path / "run" / "live"


SBU = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sbu")


@pytest.mark.skipif(not os.path.isdir(SBU), reason="../shared/data/sbu not present")
def test_prepare_sbu_from_the_command_line(tmp_path):
    """The text importers' command path (prepare sbu|kard|msr-daily) on the real SBU set."""
    from skelact.data.formats.annotations import open_annotations

    out = tmp_path / "sbu.store"
    res = subprocess.run([sys.executable, "-m", "skelact.cli", "prepare", "sbu", SBU,
                          "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    store = open_annotations(out)
    assert len(store) == 282 and len(store.split("fold1_test")) > 0


def test_prepare_features_that_encode_nothing_fail(tmp_path):
    """A cache with no sample in it is an error (exit 1, one line), not an empty success:
    every video missing, or no sample with the modality at all."""
    from skelact.data.formats.annotations import save_annotations
    from tests.conftest import toy_annotations

    data = toy_annotations(num_classes=2, per_class=2)
    missing = save_annotations(data, tmp_path / "missing.pkl")  # NTU names, no videos
    for ann in data["annotations"]:
        ann["modalities"] = ["skeleton"]
    absent = save_annotations(data, tmp_path / "absent.pkl")
    for ann, without, why in (
        (missing, 0, "nothing encoded: all 4 failed (reasons above and in"),
        (absent, 4, f"nothing encoded: no sample of {absent} has a rgb source"),
    ):
        res = subprocess.run(
            [sys.executable, "-m", "skelact.cli", "prepare", "features", "--modality", "rgb",
             "--ann", str(ann), "--root", str(tmp_path), "--out", str(tmp_path / ann.stem),
             "--arch", "resnet18", "--pretrained", "none", "--workers", "0"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert res.returncode == 1, res.stderr[-2000:]
        assert f"0 sample(s) encoded, 0 already cached, {without} without" in res.stdout
        assert why in res.stderr and "Traceback" not in res.stderr


def test_modality_after_the_overrides_is_taken_as_before_them(capsys):
    from skelact.cli import main

    base = ["data=utdmhad_xsub", "data.ann_file=x.store"]
    main(["train", "--modality", "skeleton", *base, "--cfg", "job"])
    before = capsys.readouterr().out
    main(["train", *base, "--modality", "skeleton", "--cfg", "job"])
    assert capsys.readouterr().out == before and "name: bilstm\n" in before
    main(["train", *base, "--modality=skeleton", "--cfg", "job"])
    assert capsys.readouterr().out == before
