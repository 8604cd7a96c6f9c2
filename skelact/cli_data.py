"""The `skelact` commands that make annotation files: `prepare` (datasets), `convert` (videos,
through MediaPipe), `repack` (store <-> pyskl pickle, or another joint layout) and `merge`
(several files in one)."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    ntu.add_argument(
        "--dataset",
        choices=["ntu60", "ntu120"],
        default="ntu60",
        help="which release's classes and protocols the splits follow",
    )
    ntu.add_argument("--workers", type=int, default=1, help="parser processes (default 1)")
    ntu.add_argument("--max-bodies", type=int, default=2, help="bodies kept per sample")
    ntu.add_argument("--rgb", help="folder of <name>_rgb.avi videos (records availability)")
    ntu.add_argument("--depth", help="folder of masked depth folders <name>/MDepth-*.png")
    feat = src.add_parser(
        "features",
        help="cache per-frame features for rgb or depth",
        description="Run a per-frame encoder once over the sampled frames of every sample "
        "and store (T, D) float16 arrays, so training reads features "
        "(data.rgb.features=OUT or data.depth.features=OUT) instead of decoding videos. RGB: "
        "a frozen ImageNet CNN (EfficientNet-Lite0 by default). Depth: by default the person's "
        "crop itself at 64 x 64 (--arch pixels), on which training fits a small CNN.",
    )
    feat.add_argument(
        "--modality",
        choices=["rgb", "depth"],
        required=True,
        help="rgb: the samples' videos; depth: their depth maps (.mat or folders of PNGs)",
    )
    feat.add_argument(
        "--ann", required=True, help="annotation store or pickle (prepare ntu, convert, ...)"
    )
    feat.add_argument(
        "--root",
        help="the folder the sources are under: for a file of `skelact convert`, the folder "
        "holding the videos it was given (the default there: convert records it); NTU's "
        "nturgb+d_rgb/ or nturgb+d_depth_masked/; or the root of the samples' "
        "rgb_path / depth_path (README: Your own RGB-D data)",
    )
    feat.add_argument("--out", required=True, help="feature cache folder")
    feat.add_argument(
        "--arch",
        choices=["efficientnet_lite0", "resnet18", "resnet34", "resnet50", "pixels"],
        help="per-frame encoder (default: efficientnet_lite0 for rgb, its ImageNet weights "
        "install with skelact; pixels for depth: the crop itself at --grid x --grid, on "
        "which training fits a small CNN; on UTD-MHAD depth it beats frozen ImageNet features "
        "by about 14 points, 84.6 vs 70.2 %% over three seeds, see BENCHMARKS.md)",
    )
    feat.add_argument(
        "--grid",
        type=int,
        help="pixels: the crop's resolution (default 64, 4096 features a frame); a CNN: its "
        "feature maps pooled over grid x grid cells (default 1)",
    )
    feat.add_argument(
        "--pretrained",
        default="imagenet",
        choices=["imagenet", "none"],
        help="imagenet (efficientnet_lite0: packaged; resnet: torch cache, --weights-file or "
        "download) or none (random weights, on purpose: recorded in index.json)",
    )
    feat.add_argument("--weights-file", help="local ImageNet weights file (offline machines)")
    feat.add_argument(
        "--depth-norm",
        default="person",
        choices=["person", "fixed"],
        help="depth around the person's median depth (nearer brighter) or over 0.5-4.5 m",
    )
    feat.add_argument("--frames", type=int, default=16, help="frames sampled per sample")
    feat.add_argument(
        "--size",
        type=int,
        help="crop size (default: 224 for rgb; 160 for depth, about the person's size in "
        "Kinect depth frames)",
    )
    feat.add_argument("--batch-size", type=int, default=8, help="samples per forward pass")
    feat.add_argument("--workers", type=int, default=2, help="decoding processes")
    feat.add_argument("--device", default="auto", help="auto | cpu | cuda")
    for name, text in (
        ("nucla", "Northwestern-UCLA: ROOT holds all_sqe/*.json"),
        (
            "utd-mhad",
            "UTD-MHAD: ROOT holds Skeleton/*.mat (and Depth/*.mat, recorded as "
            "each sample's depth source when there)",
        ),
        ("sbu", "SBU Kinect Interaction: ROOT holds <set>/<class>/<take>/skeleton_pos.txt"),
        ("kard", "KARD: ROOT holds aAA_sSS_eEE_realworld.txt"),
        ("msr-daily", "MSR DailyActivity3D: ROOT holds aAA_sSS_eEE_skeleton_proj.txt"),
    ):
        q = src.add_parser(name, help=text, description=text)
        q.add_argument("root", help="dataset folder")
        q.add_argument("--out", required=True, help=OUT_HELP)


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also show MediaPipe's native INFO/WARNING lines (errors are always shown)",
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    if args.source == "ntu":
        from skelact.data.sources.ntu_prepare import prepare_ntu

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
        from skelact.data.sources.importers import prepare_nucla

        prepare_nucla(args.root, args.out)
    elif args.source == "utd-mhad":
        from skelact.data.sources.importers import prepare_utd_mhad

        prepare_utd_mhad(args.root, args.out)
    elif args.source in _TEXT_IMPORTERS:
        from skelact.data.sources import text_importers

        getattr(text_importers, _TEXT_IMPORTERS[args.source])(args.root, args.out)
    elif args.source == "features":
        from skelact.data.media.features import extract_features

        report = extract_features(
            args.ann,
            args.modality,
            args.root or _video_root(args.ann),
            args.out,
            arch=args.arch,
            pretrained=None if args.pretrained == "none" else args.pretrained,
            num_frames=args.frames,
            size=args.size or (160 if args.modality == "depth" else 224),
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            weights_file=args.weights_file,
            depth_norm=args.depth_norm,
            grid=args.grid,
        )
        _print_features(report)
        if not report["ok"] and not report["cached"]:
            failed = report["missing"] + report["error"]
            why = (
                f"all {failed} failed (reasons above and in {report['index']})"
                if failed
                else f"no sample of {args.ann} has a {args.modality} source"
            )
            raise SystemExit(f"skelact prepare features: nothing encoded: {why}")


def _print_features(r: dict) -> None:
    print(
        f"{r['out_dir']}: {r['ok']} sample(s) encoded, {r['cached']} already cached, "
        f"{r['absent']} without this modality, {r['missing'] + r['error']} failed "
        f"({r['frames_per_s']:.0f} frames/s, feature width {r['feature_dim']})"
    )
    if r.get("renewed"):
        print(f"  {r['renewed']} of them encoded again: their source changed since it was cached")
    for name, reason in list(r["failures"].items())[:10]:
        print(f"  {name}: {reason}")
    if len(r["failures"]) > 10:
        print(f"  ... {len(r['failures']) - 10} more in {r['index']}")


_TEXT_IMPORTERS = {"sbu": "prepare_sbu", "kard": "prepare_kard", "msr-daily": "prepare_msr_daily"}


def cmd_repack(args: argparse.Namespace) -> None:
    from skelact.data.formats.pickle_stream import pickle_to_store
    from skelact.data.formats.pickles import PICKLE_SUFFIXES, store_to_pickle
    from skelact.data.formats.store_write import disk_size

    src, dst = Path(args.src), Path(args.dst)
    if args.layout:
        from skelact.data.formats.annotations import remap_layout

        done = remap_layout(src, dst, args.layout)
        print(f"wrote {dst}: {done['samples']} samples, joints of {done['from']} -> {done['to']} "
              f"({disk_size(dst) / 2**20:.1f} MiB)")  # fmt: skip
        return
    if dst.suffix in PICKLE_SUFFIXES:
        store_to_pickle(src, dst)
    elif src.is_file():
        pickle_to_store(src, dst)
    else:
        raise ValueError(f"{src} -> {dst}: give a pickle and a store folder, one of each")
    print(f"wrote {dst} ({disk_size(dst) / 2**20:.1f} MiB)")


def _video_root(ann: str) -> str:
    """prepare features without --root: the folder `skelact convert` recorded for the file."""
    from skelact.data.formats.annotations import open_annotations

    root = (open_annotations(ann).top.get("report") or {}).get("video_root")
    if not root:
        raise SystemExit(
            f"skelact prepare features: give --root, the folder the sources are under ({ann} "
            "records none: only `skelact convert` does)"
        )
    return root


def cmd_merge(args: argparse.Namespace) -> None:
    from skelact.data.formats.annotations import merge_annotations
    from skelact.data.formats.store_write import disk_size

    done = merge_annotations(
        args.sources, args.out, layout=args.layout, holdout=args.holdout, seed=args.seed
    )
    for part in done["parts"]:
        print(f"  {part['file']}: {part['samples']} samples, {part['classes']} classes "
              f"(labels from {part['label_offset']}), {part['held_out']} held out")  # fmt: skip
    print(f"wrote {args.out}: {done['samples']} samples, {done['classes']} classes, splits "
          f"train / val ({done['val']} held out) and each file's own "
          f"({disk_size(Path(args.out)) / 2**20:.1f} MiB)")  # fmt: skip


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


def add_data_commands(sub) -> None:
    """Register prepare, convert, repack and merge on the `skelact` subparsers."""
    _add_prepare(sub)
    sub.choices["prepare"].set_defaults(func=cmd_prepare)
    _add_convert(sub)
    _add_repack(sub)
    _add_merge(sub)


def _add_convert(sub) -> None:
    from skelact.layouts import POSE_LAYOUTS

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
    add_verbose(conv)
    conv.set_defaults(func=cmd_convert)


def _add_repack(sub) -> None:
    from skelact.layouts import LAYOUTS

    rp = sub.add_parser(
        "repack",
        help="annotation store <-> pyskl/mmaction2 pickle, or into another joint layout",
        description="Rewrite an annotation file in the other format: a store into a "
        "pyskl/mmaction2 pickle (DST ends in .pkl), so pyskl opens skelact-prepared data, or "
        "a pickle into a store. With --layout the joints also move into another layout (a "
        "store or a pickle, either way, the same format included). Pickles are read with the "
        "restricted unpickler (arrays, numbers, strings and containers only).",
    )
    rp.add_argument("src", help="store folder or .pkl file")
    rp.add_argument("dst", help="output: .pkl for a pickle, anything else for a store")
    rp.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        help="also move the joints into this layout, by name (Kinect v1's 20 into OpenNI's 15, "
        "NTU's 25 into either); refused where the file lacks a joint the layout has",
    )
    rp.set_defaults(func=cmd_repack)


def _add_merge(sub) -> None:
    from skelact.layouts import LAYOUTS

    mg = sub.add_parser(
        "merge",
        help="several annotation files in one (pretraining on several sets)",
        description="Write one annotation file from several, to pretrain a model on several "
        "small sets and fine-tune it on another (trainer.init_from). Each file's classes stay "
        "apart ('<file>: <class>'), its samples are named '<file>/<name>' and its splits kept "
        "as '<file>/<split>'; splits 'train' and 'val' hold every sample, a random --holdout "
        "of each file's in 'val'. Train on it with: skelact train data=annotations "
        "data.ann_file=OUT data.test_split=val",
    )
    mg.add_argument("sources", nargs="+", help="store folders or .pkl files (two or more)")
    mg.add_argument("--out", required=True, help=OUT_HELP)
    mg.add_argument(
        "--layout",
        choices=sorted(LAYOUTS),
        help="move every file's joints into this layout by name first (as repack --layout); "
        "without it the files must share one",
    )
    mg.add_argument(
        "--holdout", type=float, default=0.05, help="fraction of each file's samples in 'val'"
    )
    mg.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    mg.set_defaults(func=cmd_merge)
