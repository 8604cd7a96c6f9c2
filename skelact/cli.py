"""`skelact <command>`: parse arguments, call one function. Every command explains itself
with `skelact <command> --help`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  skelact demo                                   synthetic NTU data -> prepare -> train -> eval
  skelact prepare ntu --skeletons nturgb+d_skeletons --out ntu60.store --dataset ntu60 --workers 2
  skelact train data=ntu60_xsub data.ann_file=ntu60.store
  skelact train data=ntu60_xsub data.ann_file=ntu60_3danno.pkl   pyskl pickle: converted once
  skelact repack ntu60.store ntu60.pkl          store -> pyskl pickle (or pickle -> store)
  skelact train --modality rgb+skeleton data=ntu60_xsub data.ann_file=ntu60.store
  skelact eval ckpt=runs/.../checkpoints/last.pt data=ntu60_xview
  skelact convert videos/ --out mine.pkl --layout ntu25 --labels-from-folders
  skelact predict clip.mp4 --ckpt runs/.../checkpoints/best.pt --render out.mp4
  skelact predict --live 0 --ckpt runs/.../checkpoints/best.pt       camera 0, live
  skelact export runs/.../checkpoints/best.pt --onnx model.onnx
"""

TRAIN_HELP = """Train and evaluate a model. Arguments are hydra overrides (key=value), composed from
the config groups in {configs}:
{groups}
Run directory: hydra.run.dir=DIR (default runs/<data>_<modality>_<model>/<time>). It receives
config.yaml, train_log.csv, checkpoints/{{last,best}}.pt, metrics.json, predictions.csv,
confusion_matrix.csv and confusion_matrix.png.
Common overrides: trainer.epochs=N trainer.batch_size=N trainer.lr=X trainer.device=cpu|cuda
trainer.num_workers=N trainer.resume=true seed=N data.skeleton.clip_len=N model.core.cell=gru
Several processes: torchrun --nproc_per_node=N -m skelact.train hydra.run.dir=DIR ...
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
    from skelact import train

    overrides = list(args.overrides)
    if args.modality:
        from skelact.config import modality_override

        overrides.insert(0, modality_override(args.modality))
    sys.argv = ["skelact train", *overrides]
    train.main()


def cmd_eval(args: argparse.Namespace) -> None:
    from skelact.evaluate import evaluate_checkpoint

    evaluate_checkpoint(args.overrides)


def cmd_demo(args: argparse.Namespace) -> None:
    from skelact.demo import run_demo

    run_demo(args.out, epochs=args.epochs, modality=args.modality, workers=args.workers)


def cmd_prepare(args: argparse.Namespace) -> None:
    if args.source == "ntu":
        from skelact.data.ntu_prepare import prepare_ntu

        prepare_ntu(
            args.skeletons,
            args.out,
            dataset=args.dataset,
            workers=args.workers,
            max_bodies=args.max_bodies,
            rgb=args.rgb,
            depth=args.depth,
        )
    elif args.source == "nucla":
        from skelact.data.importers import prepare_nucla

        prepare_nucla(args.root, args.out)
    elif args.source == "utd-mhad":
        from skelact.data.importers import prepare_utd_mhad

        prepare_utd_mhad(args.root, args.out)
    elif args.source in _TEXT_IMPORTERS:
        from skelact.data import text_importers

        getattr(text_importers, _TEXT_IMPORTERS[args.source])(args.root, args.out)
    elif args.source == "features":
        from skelact.data.features import extract_features

        extract_features(
            args.ann,
            args.modality,
            args.root,
            args.out,
            arch=args.arch,
            pretrained=None if args.pretrained == "none" else args.pretrained,
            num_frames=args.frames,
            size=args.size,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            weights_file=args.weights_file,
        )


_TEXT_IMPORTERS = {"sbu": "prepare_sbu", "kard": "prepare_kard", "msr-daily": "prepare_msr_daily"}


def cmd_repack(args: argparse.Namespace) -> None:
    from skelact.data.pickles import PICKLE_SUFFIXES, pickle_to_store, store_to_pickle
    from skelact.data.store_write import disk_size

    src, dst = Path(args.src), Path(args.dst)
    if dst.suffix in PICKLE_SUFFIXES:
        store_to_pickle(src, dst)
    elif src.is_file():
        pickle_to_store(src, dst)
    else:
        raise ValueError(f"{src} -> {dst}: give a pickle and a store folder, one of each")
    print(f"wrote {dst} ({disk_size(dst) / 2**20:.1f} MiB)")


def cmd_convert(args: argparse.Namespace) -> None:
    from skelact.pose.convert import convert_videos

    convert_videos(
        args.inputs,
        args.out,
        layout=args.layout,
        max_people=args.max_people,
        workers=args.workers,
        labels_from_folders=args.labels_from_folders,
        pose_model=args.pose_model,
        mirrored=args.mirrored,
    )


def cmd_predict(args: argparse.Namespace) -> None:
    from skelact.predict import predict_live, predict_video

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
    from skelact.pose.model import ensure_pose_model

    path = ensure_pose_model(
        args.path, variant=args.variant, offline=True if args.offline else None, force=args.force
    )
    print(path)


OUT_HELP = "annotation store to write (a folder); a name ending in .pkl writes a pyskl pickle"


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="turn a dataset into an annotation store",
        description="Turn a dataset on disk into skelact's annotation store (a folder that "
        "training memory-maps) with the official splits; an --out ending in .pkl writes a "
        "pyskl-compatible pickle instead.",
    )
    src = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    ntu = src.add_parser(
        "ntu",
        help="NTU RGB+D 60/120 raw .skeleton files",
        description="Parse NTU RGB+D .skeleton files (skipping the official "
        "missing-skeleton samples) into an annotation file with the "
        "cross-subject and cross-view (NTU60) / cross-setup (NTU120) splits.",
    )
    ntu.add_argument(
        "--skeletons", required=True, help="folder of *.skeleton files (searched recursively)"
    )
    ntu.add_argument("--out", required=True, help=OUT_HELP)
    ntu.add_argument("--dataset", choices=["ntu60", "ntu120"], default="ntu60")
    ntu.add_argument("--workers", type=int, default=1, help="parser processes (default 1)")
    ntu.add_argument("--max-bodies", type=int, default=2, help="bodies kept per sample")
    ntu.add_argument("--rgb", help="folder of <name>_rgb.avi videos (records availability)")
    ntu.add_argument("--depth", help="folder of masked depth folders <name>/MDepth-*.png")
    feat = src.add_parser(
        "features",
        help="cache frozen-ResNet features for rgb or depth",
        description="Run a frozen ResNet once over the sampled frames of every "
        "sample and store (T, D) float16 arrays, so training reads features "
        "(model.rgb.input=features data.rgb.features=OUT) instead of pixels.",
    )
    feat.add_argument("--modality", choices=["rgb", "depth"], required=True)
    feat.add_argument("--ann", required=True, help="annotation store or pickle (from prepare ntu)")
    feat.add_argument(
        "--root", required=True, help="NTU nturgb+d_rgb/ or nturgb+d_depth_masked/ folder"
    )
    feat.add_argument("--out", required=True, help="feature cache folder")
    feat.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    feat.add_argument(
        "--pretrained",
        default="imagenet",
        choices=["imagenet", "none"],
        help="imagenet (torchvision weights; must be downloadable or cached) or "
        "none (random weights, on purpose)",
    )
    feat.add_argument("--weights-file", help="local torchvision weights file (offline machines)")
    feat.add_argument("--frames", type=int, default=16, help="frames sampled per sample")
    feat.add_argument("--size", type=int, default=224, help="crop size")
    feat.add_argument("--batch-size", type=int, default=8, help="samples per forward pass")
    feat.add_argument("--workers", type=int, default=2, help="decoding processes")
    feat.add_argument("--device", default="auto", help="auto | cpu | cuda")
    for name, text in (
        ("nucla", "Northwestern-UCLA: ROOT holds all_sqe/*.json"),
        ("utd-mhad", "UTD-MHAD: ROOT holds Skeleton/*.mat"),
        ("sbu", "SBU Kinect Interaction: ROOT holds <set>/<class>/<take>/skeleton_pos.txt"),
        ("kard", "KARD: ROOT holds aAA_sSS_eEE_realworld.txt"),
        ("msr-daily", "MSR DailyActivity3D: ROOT holds aAA_sSS_eEE_skeleton_proj.txt"),
    ):
        q = src.add_parser(name, help=text, description=text)
        q.add_argument("root", help="dataset folder")
        q.add_argument("--out", required=True, help=OUT_HELP)


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show MediaPipe's native INFO/WARNING lines (errors are always shown)",
    )


def build_parser() -> argparse.ArgumentParser:
    from skelact.layouts import POSE_LAYOUTS

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
        "rgb+skeleton (or +depth) it renders RGB/depth clips of the synthetic people, caches "
        "frozen-ResNet features, and trains each stream alone and fused: two class pairs only "
        "the images or only the skeletons can tell apart show what fusion adds.",
    )
    demo.add_argument("--out", default="skelact_demo", help="output folder (default skelact_demo)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs per benchmark")
    demo.add_argument(
        "--modality",
        default="skeleton",
        help="skeleton (default: NTU-format skeletons, both protocols), or a combination "
        "such as rgb+skeleton or rgb+skeleton+depth (rendered clips, fusion vs single streams)",
    )
    demo.add_argument("--workers", type=int, default=2, help="processes for prepare")
    demo.set_defaults(func=cmd_demo)

    _add_prepare(sub)
    sub.choices["prepare"].set_defaults(func=cmd_prepare)

    from skelact.config import CONFIG_DIR

    train = sub.add_parser(
        "train",
        help="train and evaluate (hydra overrides)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=TRAIN_HELP.format(configs=CONFIG_DIR, groups=_groups_text()),
    )
    train.add_argument(
        "--modality",
        help="streams to fuse, e.g. skeleton, rgb+skeleton, "
        "rgb+skeleton+depth (sugar for modality=...)",
    )
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="hydra overrides key=value")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a checkpoint: skelact eval ckpt=PATH "
        "[data=... data.ann_file=... data.test_split=...] [out_dir=DIR]\n"
        "Writes metrics.json, predictions.csv and the confusion matrix "
        "(default out_dir: <run dir>/eval_<split>).",
    )
    ev.add_argument("overrides", nargs=argparse.REMAINDER, help="ckpt=PATH and overrides")
    ev.set_defaults(func=cmd_eval)

    conv = sub.add_parser(
        "convert",
        help="videos -> skeleton annotation file (MediaPipe)",
        description="Run MediaPipe PoseLandmarker over videos (files or "
        "folders, searched recursively) and write an annotation store (or pickle). Videos "
        "that fail are listed in <out>.report.json; reruns skip videos "
        "already converted.",
    )
    conv.add_argument("inputs", nargs="+", help="video files or folders")
    conv.add_argument("--out", required=True, help=OUT_HELP)
    conv.add_argument(
        "--layout",
        choices=POSE_LAYOUTS,
        default="mediapipe33",
        help="keep BlazePose's 33 landmarks or map onto NTU's 25 Kinect joints",
    )
    conv.add_argument("--max-people", type=int, default=1, help="people tracked per video")
    conv.add_argument("--workers", type=int, default=1, help="videos converted in parallel")
    conv.add_argument(
        "--labels-from-folders",
        action="store_true",
        help="videos/<class>/<clip>: the folder names become the labels",
    )
    conv.add_argument(
        "--pose-model",
        help="a pose_landmarker .task bundle (default: cached "
        "official one, else `skelact pose-model --offline`)",
    )
    conv.add_argument(
        "--mirrored",
        action="store_true",
        help="the videos are mirror images (NTU's RGB videos are): flip x and swap "
        "left/right joints, so 'left' is the person's own left",
    )
    _add_verbose(conv)
    conv.set_defaults(func=cmd_convert)

    rp = sub.add_parser(
        "repack",
        help="annotation store <-> pyskl/mmaction2 pickle",
        description="Rewrite an annotation file in the other format: a store into a "
        "pyskl/mmaction2 pickle (DST ends in .pkl), so pyskl opens skelact-prepared data, or "
        "a pickle into a store. Pickles are read with the restricted unpickler (arrays, "
        "numbers, strings and containers only).",
    )
    rp.add_argument("src", help="store folder or .pkl file")
    rp.add_argument("dst", help="output: .pkl for a pickle, anything else for a store")
    rp.set_defaults(func=cmd_repack)

    pred = sub.add_parser(
        "predict",
        help="classify the action in a video",
        description="Convert a video in memory, run a skeleton checkpoint on "
        "it and print the top-k actions with the temporal attention.",
    )
    pred.add_argument("video", nargs="?", help="video file (or use --live)")
    pred.add_argument("--ckpt", required=True, help="checkpoint (…/best.pt) or exported .onnx")
    pred.add_argument("--topk", type=int, default=5)
    pred.add_argument("--json", help="write the prediction and attention as JSON")
    pred.add_argument(
        "--render", help="write the video with skeleton and label (mp4), and <name>.attention.png"
    )
    pred.add_argument(
        "--window",
        type=float,
        help="sliding window length in seconds: writes <name>.timeline.csv and .png "
        "(--live: the window classified at every update, default 2)",
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
    pred.add_argument("--every", type=float, default=0.5, help="--live: seconds between updates")
    pred.add_argument(
        "--timeline", default="live_timeline.csv", help="--live: timeline CSV (+ .json summary)"
    )
    pred.add_argument("--pose-model", help="a pose_landmarker .task bundle")
    _add_verbose(pred)
    pred.set_defaults(func=cmd_predict)

    ex = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description="Export a checkpoint's network (skeleton streams, cached-feature streams) "
        "to ONNX with a dynamic batch; the input contract (layout, channels, bodies, clip "
        "length, class names) goes into the metadata. Run it with skelact.load(ONNX) "
        "(needs the [onnx] extra: onnxruntime).",
    )
    ex.add_argument("ckpt", help="checkpoint (…/checkpoints/best.pt)")
    ex.add_argument("--onnx", required=True, help="ONNX file to write")
    ex.set_defaults(func=cmd_export)

    pm = sub.add_parser(
        "pose-model",
        help="fetch or build the MediaPipe pose bundle",
        description="Make a PoseLandmarker bundle available and print its path. "
        "Default: the official bundle (downloaded once into the cache). "
        "--offline: build one from the models inside the mediapipe 0.10.21 "
        "wheel (fetched with pip), for machines without internet access.",
    )
    pm.add_argument("--offline", action="store_true", help="build the offline bundle")
    pm.add_argument("--variant", default="full", choices=["lite", "full", "heavy"])
    pm.add_argument("--path", help="verify and use this bundle file")
    pm.add_argument("--force", action="store_true", help="rebuild / re-download")
    pm.set_defaults(func=cmd_pose_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    import logging

    args = build_parser().parse_args(argv)
    if args.command != "train":  # hydra configures logging for train itself
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if getattr(args, "verbose", False):
        from skelact.pose.quiet import set_verbose

        set_verbose(True)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        # input problems (a missing file, a malformed dataset, no pose model): one clear line
        raise SystemExit(f"skelact {args.command}: error: {err}") from err


if __name__ == "__main__":
    main()
