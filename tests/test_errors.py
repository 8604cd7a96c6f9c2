"""Every error skelact raises on purpose (missing file, unsafe file, bad config, contract
mismatch) ends the command with exit code 1 and one line, no traceback, and leaves no run or
evaluation folder behind; native libraries' warnings stay off the terminal."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from skelact.cli import main
from skelact.data.formats.annotations import save_annotations
from tests.conftest import ROOT, toy_annotations


class Evil:
    """Unpickles by calling os.system: what a hostile file does."""

    def __reduce__(self):
        return os.system, ("echo PWNED",)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    (root / "evil.pkl").write_bytes(pickle.dumps({"annotations": [Evil()]}, protocol=2))
    torch.save({"model": Evil()}, root / "evil.pt")
    data = toy_annotations(num_classes=3, per_class=4, frames=20)
    data["layout"] = "ntu25"
    save_annotations(data, root / "toy.pkl")
    return {"root": root, "evil.pkl": root / "evil.pkl", "evil.pt": root / "evil.pt"}


def one_line_error(args: list[str], workdir: Path, monkeypatch) -> str:
    """Run `skelact ARGS` in `workdir`; the message it exits with (asserted: exit code 1,
    one line, no traceback, the command named)."""
    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    message = exit_.value.code
    assert isinstance(message, str), message  # a string exits with status 1
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(f"skelact {args[0]}"), message
    return message


def toy_split(files) -> list[str]:
    return [f"data.ann_file={files['root'] / 'toy.pkl'}", "data=annotations"] + [
        "data.train_split=train",
        "data.test_split=test",
    ]


@pytest.mark.parametrize(
    "args, words",
    [
        (["data=ntu60_xsub", "data.ann_file=nope.store"], "annotation file nope.store does not"),
        (
            ["data=ntu60_xsubb", "data.ann_file=x.store"],
            "no data config 'ntu60_xsubb'; did you "
            "mean data=ntu60_xsub? the data configs: annotations, kard_xsub,",
        ),  # not _base
        (
            ["data=ntu60_xsub", "data.ann_file=x.store", "trainer.epoch=3"],
            "no setting "
            "'trainer.epoch' (`skelact train --cfg job` prints every setting); did you mean "
            "trainer.epochs?",
        ),
        (
            ["modle=bilstm"],
            "no setting or config group 'modle'; the groups are data, modality, model, trainer",
        ),
        (["data=ntu60_xsub"], "set data.ann_file=..."),
        (
            [
                "--modality",
                "skeleton+depth",
                "data=utdmhad_xsub",
                "data.ann_file=x.store",
                "data.depth.features=nope",
            ],
            "feature cache nope does not exist",
        ),  # before a fit run
        (["--modality", "skeleton+audio", "data=ntu60_xsub"], "unknown modality"),
    ],
)
def test_train_errors_are_one_line_and_leave_no_run_folder(args, words, tmp_path, monkeypatch):
    message = one_line_error(["train", *args], tmp_path, monkeypatch)
    assert words in message
    assert not (tmp_path / "runs").exists()


def test_an_added_key_is_named_as_one_nothing_reads(caplog):
    """`+trainer.epoch=3` (hydra's own advice for a key it does not know) trained with the key
    ignored, without a word; now a warning names it and the nearest setting. `++` of a
    setting the chosen configs have is an ordinary override, as are hydra's own keys."""
    from skelact.config import compose_run

    with caplog.at_level("WARNING", logger="skelact"):
        cfg, _ = compose_run(["+trainer.epoch=3", "++trainer.epochs=4", "+hydra.job.env_set.X=1",
                              "model=bilstm_4s_st", "++model.skeleton.gcn.layers=2"])  # fmt: skip
    assert cfg.trainer.epochs == 4 and cfg.trainer.epoch == 3
    (record,) = caplog.records
    assert record.getMessage() == (
        "+trainer.epoch adds a setting skelact's configs do not have: nothing reads it, the run "
        "goes on as without it (`skelact train --cfg job` prints every setting); did you mean "
        "trainer.epochs?"
    )


@pytest.mark.parametrize(
    "extra, words",
    [
        ([], "refused to load"),  # unsafe file: os.system (posix.system)
        (["data.layout=kinect20"], "kinect20"),  # contract: the file's joints are NTU's
        (["data.test_split=nope"], "nope"),  # a split the file does not have
    ],
)
def test_train_input_errors(files, extra, words, tmp_path, monkeypatch):
    args = toy_split(files) + extra
    if not extra:
        args[0] = f"data.ann_file={files['evil.pkl']}"
    message = one_line_error(["train", *args, "hydra.run.dir=run"], tmp_path, monkeypatch)
    assert words in message
    assert not (tmp_path / "run").exists()


def test_unsafe_checkpoint_is_refused_in_skelacts_words(files, tmp_path, monkeypatch):
    evil = str(files["evil.pt"])
    for args in (["eval", f"ckpt={evil}"], ["predict", "x.mp4", "--ckpt", evil],
                 ["export", evil, "--onnx", "m.onnx"]):  # fmt: skip
        message = one_line_error(args, tmp_path, monkeypatch)
        assert "could run code" in message and "did not load it" in message
        assert "system" in message and "weights_only" not in message
    assert not list(tmp_path.iterdir())


def test_what_is_not_a_checkpoint_is_named(tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "clip.avi").write_bytes(b"RIFF" * 16)
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "notes.pt").write_text("hello, this is not a checkpoint\n")
    cases = [
        (["eval", "ckpt=model.onnx"], "model.onnx is an ONNX model, not a checkpoint (.pt)"),
        (["eval", "ckpt=empty_run"], "empty_run is a folder without checkpoints/last.pt"),
        (["export", "empty_run", "--onnx", "m.onnx"], "a folder without checkpoints/last.pt"),
        (["export", "clip.avi", "--onnx", "m.onnx"], "clip.avi could not be read (is it a"),
        (
            ["eval", "ckpt=notes.pt"],
            "notes.pt could not be read (is it a checkpoint of `skelact "
            "train`?): not a file torch.save wrote",
        ),  # fmt: skip
    ]
    for args, words in cases:
        assert words in one_line_error(args, tmp_path, monkeypatch)
    assert not (tmp_path / "m.onnx").exists()
    # an annotation pickle given as a checkpoint: one line, without torch's warning about the
    # pickle's protocol (two lines pointing into torch's source before it)
    with open(tmp_path / "data.pkl", "wb") as f:
        pickle.dump({"annotations": [], "split": {}}, f, protocol=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        words = one_line_error(["eval", "ckpt=data.pkl"], tmp_path, monkeypatch)
    assert "data.pkl could not be read: not a checkpoint of tensors and plain data" in words
    from skelact.checkpoints import run_checkpoint  # init_from and distill.teacher

    with pytest.raises(SystemExit, match="init_from: empty_run has no checkpoints/last.pt; give"):
        run_checkpoint("empty_run", "trainer.init_from")


def test_other_commands_errors_are_one_line(files, ntu_ckpt, tmp_path, monkeypatch):
    cases = [
        (["repack", str(files["evil.pkl"]), "out.store"], "refused to load"),
        (["prepare", "ntu", "--skeletons", "nowhere", "--out", "x.store"], "nowhere"),
        (
            ["prepare", "ntu", "--skeletons", str(files["evil.pt"]), "--out", "x.store"],
            "evil.pt is a file: --skeletons takes the folder",
        ),  # fmt: skip
        (["demo", "--modality", "audio", "--out", "d"], "unknown modality 'audio'"),
        (["eval", "ckpt=nope.pt"], "nope.pt does not exist"),
    ]
    args = ["eval", f"ckpt={ntu_ckpt}", "data.skeleton.test_clips=many"]
    cases.append((args, "data.skeleton.test_clips must be an integer >= 1, got 'many'"))
    for args, words in cases:
        assert words in one_line_error(args, tmp_path, monkeypatch)
    assert not list(tmp_path.iterdir())


def test_output_paths_and_damaged_models_are_one_line(files, ntu_ckpt, clip, tmp_path,
                                                      monkeypatch):  # fmt: skip
    """An output that is a folder, an --out folder that is not a store (refused when the store
    was closed, after every file was parsed, with a traceback), a damaged ONNX file
    (onnxruntime's traceback): one line each, naming the path."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notes.txt").write_text("mine")
    toy = str(files["root"] / "toy.pkl")
    cases = [
        (["repack", toy, "results"], "results exists and is not a skelact store; not replacing"),
        (["export", str(ntu_ckpt), "--onnx", "results"], "results is a folder: give the ONNX"),
        (["predict", str(clip), "--ckpt", str(ntu_ckpt), "--json", "results"],
         "results is a folder: give a file name"),
    ]  # fmt: skip
    if importlib.util.find_spec("onnxruntime") is not None:
        (tmp_path / "half.onnx").write_bytes(b"\x08\x07" + b"\x00" * 64)
        cases.append(
            (
                ["predict", str(clip), "--ckpt", "half.onnx"],
                "ONNX model half.onnx could not be loaded (a damaged or unfinished file?",
            )
        )
    for args, words in cases:
        assert words in one_line_error(args, tmp_path, monkeypatch)
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["notes.txt"]


def test_eval_contract_mismatch_is_one_line_and_leaves_no_folder(ntu_ckpt, tmp_path, monkeypatch):
    args = ["eval", f"ckpt={ntu_ckpt}", "data.skeleton.clip_len=8", f"out_dir={tmp_path / 'ev'}"]
    assert "clip_len=16" in one_line_error(args, tmp_path, monkeypatch)
    assert not (tmp_path / "ev").exists()


def test_a_key_without_a_near_one_gets_no_guess(tmp_path, monkeypatch):
    message = one_line_error(["train", "trainer.foo=3"], tmp_path, monkeypatch)
    assert message.endswith(
        "no setting 'trainer.foo' (`skelact train --cfg job` prints every setting)"
    )  # fmt: skip  (trainer.lr was offered)


def test_eval_refuses_a_misspelt_setting(ntu_ckpt, tmp_path, monkeypatch):
    """A key the checkpoint's config and today's defaults lack was added and ignored: the
    default split evaluated for `data.test_spilt=...`."""
    out = f"out_dir={tmp_path / 'ev'}"
    cases = [
        ("data.test_spilt=xsub_val", "no setting 'data.test_spilt' in the model's config; did you "
         "mean data.test_split?"),
        ("trainer.epoch=3", "did you mean trainer.epochs?"),
        ("hydra.run.dir=elsewhere", "or where out_dir=DIR says"),
        ("data.test_split=xsub_nope", "has no samples in split 'xsub_nope' (data.test_split); its "
         "splits: "),
    ]  # fmt: skip
    for arg, words in cases:
        assert words in one_line_error(["eval", f"ckpt={ntu_ckpt}", arg, out], tmp_path,
                                       monkeypatch)  # fmt: skip
    assert not (tmp_path / "ev").exists()


def test_a_file_of_another_layout_is_named_with_the_way_out(ntu_ckpt, files, tmp_path, monkeypatch):
    data = toy_annotations(num_classes=3, per_class=4, frames=20, joints=20)
    data["layout"] = "kinect20"
    k20 = save_annotations(data, tmp_path / "k20.pkl")
    message = one_line_error(["eval", f"ckpt={ntu_ckpt}", f"data.ann_file={k20}"], tmp_path,
                             monkeypatch)  # fmt: skip
    assert f"{k20} holds kinect20 skeletons; the checkpoint takes ntu25" in message
    assert f"`skelact repack {k20} OUT --layout ntu25`" in message
    args = [*toy_split(files), "data.layout=kinect20", "hydra.run.dir=run"]
    message = one_line_error(["train", *args], tmp_path, monkeypatch)
    assert "data.layout=kinect20 has 20 joints, the file's bodies 25 (its layout: ntu25)" in message
    assert "set data.layout=auto" in message and not (tmp_path / "run").exists()


def skelact(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(cwd / "mpl")}
    cmd = [sys.executable, "-m", "skelact.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_train_error_as_the_terminal_shows_it(tmp_path):
    res = skelact(["train", "data=ntu60_xsub", "data.ann_file=nope.store"], tmp_path)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        "skelact train: error: annotation file nope.store does not exist"
    ]
    assert res.stdout == "" and not (tmp_path / "runs").exists()


def test_live_source_that_will_not_open(ntu_ckpt, pose_model, tmp_path, monkeypatch):
    """No OpenCV warnings, no PoseLandmarker.__del__ traceback at exit: the source is opened
    before the landmarker, and what was opened is closed."""
    (tmp_path / "notes.txt").write_text("not a video\n")
    for source in ("notes.txt", "9"):  # a text file; a camera this machine does not have
        res = skelact(["predict", "--live", source, "--ckpt", str(ntu_ckpt)], tmp_path)
        assert res.returncode == 1
        assert res.stderr.splitlines() == [
            f"skelact predict: error: live source {source}: OpenCV cannot open it (not a "
            "video, no camera?)"
        ]
    args = ["predict", "--live", "gone.mp4", "--ckpt", str(ntu_ckpt)]
    message = one_line_error(args, tmp_path, monkeypatch)
    assert message.endswith("live source gone.mp4: no such file")
    # nothing left behind; mpl (the MPLCONFIGDIR above) appears only where matplotlib is imported
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mpl") == ["notes.txt"]


def test_ffmpeg_stays_quiet_before_a_clean_error(ntu_ckpt, pose_model, tmp_path):
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(
        str(tmp_path / "ok.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (64, 48)
    )
    for i in range(20):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    data = (tmp_path / "ok.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # no moov atom: unreadable
    res = skelact(["predict", "cut.mp4", "--ckpt", str(ntu_ckpt)], tmp_path)
    assert res.returncode == 1 and "moov" not in res.stderr
    assert res.stderr.splitlines() == [
        "skelact predict: error: video cut.mp4: OpenCV cannot open it (not a video or "
        "unknown codec)"
    ]
    # convert names each failed video's reason on the terminal, not only in the report
    (tmp_path / "videos").mkdir()
    (tmp_path / "cut.mp4").rename(tmp_path / "videos" / "cut.mp4")
    (tmp_path / "videos" / "notes.avi").write_text("not a video\n")
    res = skelact(["convert", "videos", "--out", "o.store", "--pose-model", str(pose_model)],
                  tmp_path)  # fmt: skip
    assert res.returncode == 1 and "moov" not in res.stderr and "Traceback" not in res.stderr
    skipped = [x for x in res.stdout.splitlines() if x.startswith("  skipped ")]
    assert len(skipped) == 2 and all("OpenCV cannot open it" in x for x in skipped), res.stdout
    assert res.stderr.splitlines()[-1].startswith("skelact convert: error: no video could be")


def test_an_error_in_a_dataloader_worker_is_its_own_message():
    """torch re-raises a worker's error with the worker's traceback as its message: with the
    default two workers a damaged store's one line was 2,000 characters of traceback."""
    from torch.utils.data._utils import ExceptionWrapper

    from skelact.terminal import one_line

    try:
        raise ValueError("kp.store/arrays.bin: 'keypoint' of sample 27 fails its checksum")
    except ValueError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ValueError) as raised:
        wrapped.reraise()
    assert "Original Traceback" in str(raised.value)  # what torch hands on
    assert one_line(raised.value) == (
        "kp.store/arrays.bin: 'keypoint' of sample 27 fails its checksum"
    )


def test_demo_options_are_checked_before_anything_is_written(tmp_path, monkeypatch):
    """--workers 0 wrote 216 files, then named prepare's max_bodies; --epochs -1 prepared the
    data first; --modality skeleton+depth ran a fusion proof whose fused score could not
    pass 75 % (skeleton and depth tell the same class pair apart)."""
    cases = [
        (["demo", "--out", "d", "--workers", "0"], "--epochs must be >= 0 and --workers >= 1"),
        (["demo", "--out", "d", "--epochs", "-1"], "got -1 and 2"),
        (["demo", "--out", "d", "--modality", "skeleton+depth"], "the fusion proof needs rgb"),
    ]
    for args, words in cases:
        assert words in one_line_error(args, tmp_path, monkeypatch)
    assert not (tmp_path / "d").exists()
