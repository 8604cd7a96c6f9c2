"""`skelact <command>`: parse arguments, call one function. Every command explains itself
with `skelact <command> --help`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  skelact demo                                   synthetic NTU data -> prepare -> train -> eval
  skelact prepare ntu --skeletons nturgb+d_skeletons --out ntu60.pkl --dataset ntu60 --workers 2
  skelact train data=ntu60_xsub data.ann_file=ntu60.pkl
  skelact train --modality rgb+skeleton data=ntu60_xsub data.ann_file=ntu60.pkl
  skelact eval ckpt=runs/.../checkpoints/last.pt data=ntu60_xview
  skelact convert videos/ --out mine.pkl --layout ntu25 --labels-from-folders
  skelact predict clip.mp4 --ckpt runs/.../checkpoints/best.pt --render out.mp4
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
    from skelact.train import CONFIG_DIR

    lines = []
    for group in ("data", "modality", "model", "trainer"):
        names = sorted(
            p.stem for p in Path(CONFIG_DIR, group).glob("*.yaml") if not p.stem.startswith("_")
        )
        lines.append(f"  {group}={'|'.join(names)}")
    return "\n".join(lines)


def modality_override(spec: str) -> str:
    """'rgb+skeleton' -> 'modality=rgb_skeleton' (stream order as in the config files)."""
    order = ["rgb", "skeleton", "depth"]
    parts = [p.strip() for p in spec.replace(",", "+").split("+") if p.strip()]
    unknown = [p for p in parts if p not in order]
    if unknown or not parts:
        raise SystemExit(f"skelact: unknown modality {spec!r}; combine {order} with '+'")
    return "modality=" + "_".join(sorted(set(parts), key=order.index))


def cmd_train(args: argparse.Namespace) -> None:
    from skelact import train

    overrides = list(args.overrides)
    if args.modality:
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
        from skelact.data.ntu import prepare_ntu

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


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="turn a dataset into an annotation file",
        description="Turn a dataset on disk into skelact's annotation pickle "
        "(pyskl-compatible) with the official splits.",
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
    ntu.add_argument("--out", required=True, help="annotation pickle to write")
    ntu.add_argument("--dataset", choices=["ntu60", "ntu120"], default="ntu60")
    ntu.add_argument("--workers", type=int, default=1, help="parser processes (default 1)")
    ntu.add_argument("--max-bodies", type=int, default=2, help="bodies kept per sample")
    ntu.add_argument("--rgb", help="folder of <name>_rgb.avi videos (records availability)")
    ntu.add_argument("--depth", help="folder of masked depth folders <name>/MDepth-*.png")
    for name, text in (
        ("nucla", "Northwestern-UCLA: ROOT holds all_sqe/*.json"),
        ("utd-mhad", "UTD-MHAD: ROOT holds Skeleton/*.mat"),
    ):
        q = src.add_parser(name, help=text, description=text)
        q.add_argument("root", help="dataset folder")
        q.add_argument("--out", required=True, help="annotation pickle to write")


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
        "cross-subject and cross-view, and print a results table.",
    )
    demo.add_argument("--out", default="skelact_demo", help="output folder (default skelact_demo)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs per benchmark")
    demo.add_argument("--modality", default="skeleton", help="skeleton (default) or rgb+skeleton")
    demo.add_argument("--workers", type=int, default=2, help="processes for prepare")
    demo.set_defaults(func=cmd_demo)

    _add_prepare(sub)
    sub.choices["prepare"].set_defaults(func=cmd_prepare)

    from skelact.train import CONFIG_DIR

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
    return parser


def main(argv: list[str] | None = None) -> None:
    import logging

    args = build_parser().parse_args(argv)
    if args.command != "train":  # hydra configures logging for train itself
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
