"""`skelact <command>`: parse arguments, call one function. Every command explains itself
with `skelact <command> --help`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skelact.cli_data import add_data_commands, add_verbose

EPILOG = """examples:
  skelact demo                                   synthetic NTU data -> prepare -> train -> eval
  skelact prepare ntu --skeletons nturgb+d_skeletons --out ntu60.store --dataset ntu60 --workers 2
  skelact train data=ntu60_xsub data.ann_file=ntu60.store
  skelact train data=ntu60_xsub data.ann_file=ntu60_3danno.pkl   pyskl pickle: converted once
  skelact repack ntu60.store ntu60.pkl          store -> pyskl pickle (or pickle -> store)
  skelact merge a.store b.store --out ab.store  several sets in one (to pretrain on)
  skelact train --modality rgb+skeleton data=ntu60_xsub data.ann_file=ntu60.store
  skelact eval ckpt=runs/.../checkpoints/last.pt  its data file and test split, from the checkpoint
  skelact convert videos/ --out mine.pkl --layout ntu25 --labels-from-folders
  skelact predict clip.mp4 --ckpt runs/.../checkpoints/best.pt --render out.mp4
  skelact predict --live 0 --ckpt runs/.../checkpoints/best.pt       camera 0, live
  skelact export runs/.../checkpoints/best.pt --onnx model.onnx
"""

TRAIN_HELP = """Train and evaluate a model. Arguments are hydra overrides (key=value), composed from
the config groups in {configs}:
{groups}
Run directory: hydra.run.dir=DIR (default runs/<data>_<modality>_<model>/<time>). It receives
config.yaml, train.log, train_log.csv, training_curves.png, checkpoints/{{last,best}}.pt,
metrics.json, predictions.csv, scores.npy (and stream_scores.npz when streams are fused),
confusion_matrix.csv and confusion_matrix.png.
Common overrides: trainer.epochs=N trainer.batch_size=N trainer.lr=X trainer.device=cpu|cuda
trainer.num_workers=N trainer.resume=true seed=N data.skeleton.clip_len=N model.core.cell=gru
trainer.precision=auto|fp32|bf16 (auto: bfloat16 autocast on CPUs that have it, else float32)
Fine-tune a trained model (same model config and joint layout; a new classifier for other
classes): trainer.init_from=RUN_DIR (or a checkpoint); refused where that model, or one it
came from, trained on samples of this run's test split (e.g. a `skelact merge` holding them)
Several processes: torchrun --nproc_per_node=N -m skelact.train hydra.run.dir=DIR ...
Learn from a trained run too (knowledge distillation): trainer.distill.teacher=RUN_DIR
(e.g. a model=bilstm_4s_st run teaching the faster default; trainer.distill.weight, .temperature)
To see the full composed config: skelact train <overrides> --cfg job
"""


def _groups_text() -> str:
    from skelact.config import CONFIG_DIR

    lines = []
    for group in ("data", "modality", "model", "trainer"):
        names = sorted(
            p.stem for p in Path(CONFIG_DIR, group).glob("*.yaml") if not p.stem.startswith("_")
        )
        lines.append(f"  {group}={'|'.join(names)}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> None:

    from skelact.config import compose_run, modality_overrides
    from skelact.terminal import no_folder_left, run_log

    overrides = list(args.overrides)
    # `--modality X` after the first override lands among the overrides: taken from there
    for i, o in enumerate(overrides):
        if o == "--modality" or o.startswith("--modality="):
            given = o.partition("=")[2] or (overrides[i + 1] if i + 1 < len(overrides) else "")
            if not given or args.modality:
                raise SystemExit("skelact train: give --modality once, with a value")
            args.modality = given
            del overrides[i : i + (1 if "=" in o else 2)]
            break
    if args.modality:
        overrides = [*modality_overrides(args.modality, overrides), *overrides]
    show = "--cfg" in overrides  # hydra's `--cfg job`: print the composed config
    overrides = [o for o in overrides if o not in ("--cfg", "job")]
    cfg, run_dir = compose_run(overrides)
    if show:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg), end="")
        return
    from skelact.train import train

    with run_log(run_dir), no_folder_left(run_dir):
        train(cfg, run_dir)


def cmd_eval(args: argparse.Namespace) -> None:
    from skelact.evaluate import evaluate_checkpoint

    evaluate_checkpoint(args.overrides)


def cmd_demo(args: argparse.Namespace) -> None:
    from skelact.demo import run_demo

    run_demo(args.out, epochs=args.epochs, modality=args.modality, workers=args.workers)


EVERY = 0.5  # predict --live: seconds between updates


def check_predict_args(args: argparse.Namespace) -> None:
    """Refuse predict options out of range, or given for the other mode (they would be
    ignored without a word). --live's window and --every: `skelact.live.LiveStream` checks."""
    for name in ("window", "stride"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise SystemExit(f"skelact predict: --{name} must be > 0 seconds, got {value}")
    if args.topk < 1 or args.max_people < 1:
        raise SystemExit("skelact predict: --topk and --max-people must be >= 1")
    if args.live is not None and args.video is not None:
        raise SystemExit("skelact predict: give a VIDEO or --live SOURCE, not both")
    if args.live is not None:
        given = {"--json": args.json, "--render": args.render, "--stride": args.stride}
        given["--max-people"] = args.max_people != 1
        mode, other = "a VIDEO", "--live"
    else:
        given = {"--every": args.every != EVERY, "--out/--timeline": args.timeline}
        mode, other = "--live", "a VIDEO"
    wrong = [name for name, value in given.items() if value]
    if wrong:
        raise SystemExit(f"skelact predict: {', '.join(wrong)}: for {mode}, not {other}")


def cmd_predict(args: argparse.Namespace) -> None:
    from skelact.predict import predict_live, predict_video

    check_predict_args(args)
    if args.live is not None:
        predict_live(
            args.live,
            args.ckpt,
            window=args.window or 2.0,
            every=args.every,
            out=args.timeline,
            mirrored=args.mirrored,
            pose_model=args.pose_model,
        )
        return
    if args.video is None:
        raise SystemExit("skelact predict: give a VIDEO, or --live SOURCE")
    predict_video(
        args.video,
        args.ckpt,
        topk=args.topk,
        json_out=args.json,
        render=args.render,
        window=args.window,
        stride=args.stride,
        pose_model=args.pose_model,
        max_people=args.max_people,
        mirrored=args.mirrored,
    )


def cmd_export(args: argparse.Namespace) -> None:
    from skelact.export import export_onnx

    out = export_onnx(args.ckpt, args.onnx)
    print(f"exported {args.ckpt} -> {out}")


def cmd_pose_model(args: argparse.Namespace) -> None:
    from skelact.pose.model import OFFLINE_BUNDLE, ensure_pose_model

    path = ensure_pose_model(
        args.path, variant=args.variant, offline=True if args.offline else None, force=args.force
    )
    if not args.offline and not args.path and path.name == OFFLINE_BUNDLE:
        print(
            "the official bundle is not cached; using the offline one built before "
            "(--force downloads the official one)",
            file=sys.stderr,
        )
    print(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skelact",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
        description="Human action recognition from 3D skeletons, RGB video and depth.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline on generated NTU-format data",
        description="Generate a small synthetic dataset in the real NTU "
        ".skeleton format, prepare it, train the skeleton stream, evaluate "
        "cross-subject and cross-view, and print a results table. With --modality "
        "rgb+skeleton (or +depth; rgb is needed) it renders RGB/depth clips of the synthetic "
        "people, caches "
        "frozen-ResNet features, and trains each stream alone and fused: two class pairs only "
        "the images or only the skeletons can tell apart show what fusion adds.",
    )
    demo.add_argument("--out", default="skelact_demo", help="output folder (default skelact_demo)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs per benchmark")
    demo.add_argument(
        "--modality",
        default="skeleton_5s",
        help="skeleton_5s (default: the default recipe, five skeleton streams), skeleton_4s, "
        "skeleton_2s or "
        "skeleton (the single-stream recipe) on NTU-format skeletons, both protocols; or a "
        "combination with rgb such as rgb+skeleton or rgb+skeleton+depth (rendered clips, "
        "fusion vs single streams)",
    )
    demo.add_argument("--workers", type=int, default=2, help="processes for prepare")
    demo.set_defaults(func=cmd_demo)

    from skelact.config import CONFIG_DIR

    train = sub.add_parser(
        "train",
        help="train and evaluate (hydra overrides)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=TRAIN_HELP.format(configs=CONFIG_DIR, groups=_groups_text()),
    )
    train.add_argument(
        "--modality",
        help="inputs and the model that goes with them: skeleton_5s (the default recipe), "
        "skeleton_4s, skeleton_2s, skeleton (single stream, model=bilstm), rgb+skeleton, "
        "rgb+skeleton+depth ... (sugar for modality=NAME model=<its model>; a model=... "
        "override wins)",
    )
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="hydra overrides key=value")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a checkpoint: skelact eval ckpt=PATH "
        "[data=... data.ann_file=... data.test_split=...] [out_dir=DIR]\n"
        "The annotation file defaults to the one the checkpoint was trained on.\n"
        "Writes metrics.json, predictions.csv and the confusion matrix "
        "(default out_dir: <run dir>/eval_<split>, or eval_<file stem>_<split> for a file "
        "other than the training one).",
    )
    ev.add_argument("overrides", nargs=argparse.REMAINDER, help="ckpt=PATH and overrides")
    ev.set_defaults(func=cmd_eval)

    add_data_commands(sub)

    pred = sub.add_parser(
        "predict",
        help="classify the action in a video",
        description="Convert a video in memory, run a skeleton checkpoint on "
        "it and print the top-k actions with the temporal attention.",
    )
    pred.add_argument("video", nargs="?", help="video file (or use --live)")
    pred.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint (…/best.pt), run directory (its checkpoints/last.pt) or exported .onnx",
    )
    pred.add_argument("--topk", type=int, default=5, help="classes printed, most likely first")
    pred.add_argument("--json", help="write the prediction and attention as JSON")
    pred.add_argument(
        "--render", help="write the video with skeleton and label (mp4), and <name>.attention.png"
    )
    pred.add_argument(
        "--window",
        type=float,
        help="sliding window length in seconds: writes <name>.timeline.csv and .png, <name> "
        "the --json file's path without its suffix, else --render's, else the video's (--live: "
        "the window classified at every update, default 2)",
    )
    pred.add_argument(
        "--stride", type=float, help="sliding window step in seconds (default: half the window)"
    )
    pred.add_argument(
        "--max-people",
        type=int,
        default=1,
        help="people tracked; with a one-person model each gets its own label "
        "(a two-person model always sees the whole scene)",
    )
    pred.add_argument(
        "--mirrored", action="store_true", help="the video is a mirror image (NTU's RGB videos)"
    )
    pred.add_argument(
        "--live",
        metavar="SOURCE",
        help="camera index, stream URL or video file (read at its own frame rate): print the "
        "action every --every seconds; frames are dropped, not queued, when pose extraction "
        "cannot keep up; Ctrl-C ends and writes the timeline",
    )
    pred.add_argument("--every", type=float, default=EVERY, help="--live: seconds between updates")
    pred.add_argument(
        "--out",
        "--timeline",
        dest="timeline",
        help="--live: the timeline CSV (+ .json summary beside it); default "
        "<run dir>/live/<source>_<time>.csv, beside the checkpoint's other outputs",
    )
    pred.add_argument("--pose-model", help="a pose_landmarker .task bundle")
    add_verbose(pred)
    pred.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description="Export a checkpoint's network (skeleton streams, cached-feature streams) "
        "to ONNX with a dynamic batch; the input contract (layout, channels, bodies, clip "
        "length, class names) goes into the metadata. Run it with skelact.load(ONNX) "
        "(needs the [onnx] extra: onnxruntime).",
    )
    ex.add_argument(
        "ckpt",
        help="checkpoint (…/checkpoints/best.pt) or a run directory (its checkpoints/last.pt)",
    )
    ex.add_argument("--onnx", required=True, help="ONNX file to write")
    ex.set_defaults(func=cmd_export)

    pm = sub.add_parser(
        "pose-model",
        help="fetch or build the MediaPipe pose bundle",
        description="Make a PoseLandmarker bundle available and print its path. "
        "Default: the official bundle (downloaded once into the cache), or, where the offline "
        "one was built before and the official one is not cached, that one (--force "
        "downloads the official one). "
        "--offline: build one from the models inside the mediapipe 0.10.21 "
        "wheel (fetched with pip), for machines without internet access.",
    )
    pm.add_argument("--offline", action="store_true", help="build the offline bundle")
    pm.add_argument(
        "--variant",
        default="full",
        choices=["lite", "full", "heavy"],
        help="the official bundle's size (--offline builds full only)",
    )
    pm.add_argument("--path", help="verify and use this bundle file")
    pm.add_argument("--force", action="store_true", help="rebuild / re-download")
    pm.set_defaults(func=cmd_pose_model)
    show_defaults(parser)
    return parser


class _Defaults:
    """Help formatter mix-in: an option with a default other than None or False has it
    appended to its help, unless the help already speaks of its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # by identity: 0 == False, and a default of 0 is worth saying
        quiet = any(action.default is v for v in (None, False, argparse.SUPPRESS))
        quiet = quiet or not action.option_strings
        return text if quiet or "default" in text else f"{text} (default: %(default)s)".strip()


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every parser under `parser` (subcommands included) shows its options' defaults, each
    keeping its own formatter otherwise."""
    parser.formatter_class = type("WithDefaults", (_Defaults, parser.formatter_class), {})
    for action in parser._actions:  # argparse keeps the subcommands' parsers here only
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases: one parser
                show_defaults(child)


def main(argv: list[str] | None = None) -> None:
    from skelact import terminal

    args = build_parser().parse_args(argv)
    terminal.setup_logging()
    if getattr(args, "verbose", False):
        from skelact.pose.quiet import set_verbose

        set_verbose(True)
    else:
        terminal.quiet_native_libraries()
    try:
        args.func(args)
    except terminal.expected_errors() as err:
        # input and configuration problems (a missing or unsafe file, a malformed dataset, a
        # contract mismatch, a mistyped override): one clear line, no traceback
        raise terminal.one_line_exit(args.command, err) from None
    except SystemExit as err:  # a refusal with a message: the same one-line form
        if not isinstance(err.code, str):
            raise
        raise terminal.one_line_exit(args.command, err) from None
    except KeyboardInterrupt:  # Ctrl-C: one line, not the stack it happened to be in
        hint = (
            "; run it again with trainer.resume=true (same hydra.run.dir) to continue from "
            "the last finished epoch"
            if args.command == "train"
            else ""
        )
        print(f"skelact {args.command}: interrupted{hint}", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
