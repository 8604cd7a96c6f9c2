"""Frames/s of frozen per-frame feature extraction, every backbone side by side in one run, and
the hours each implies to cache features for all of NTU60 (56,880 samples).

    python tools/bench_features.py [--backbones efficientnet_lite0@160,efficientnet_lite0@224,
        resnet18@224] [--threads 2] [--frames 16] [--batch 2] [--repeats 5]

Each backbone is built as `skelact prepare features` builds it (frozen; EfficientNet with its
BatchNorm folded, channels-last). `pixels@S` (the depth default) is the crop averaged to the
default grid (`PIXELS_GRID`, 64 x 64) followed by the PixelCNN the model runs on it (eval mode,
1 channel): the per-frame work of a depth stream at prediction time, as a CNN's is for the
others. Random weights: speed does not depend on them and nothing downloads. The backbones are
timed in turns (round robin), so a change in the machine's load hits all of them alike; the
table gives the median of the turns and the ratio to ResNet-18 at 224 px. Decoding is timed
separately on the real NTU clip (--clip) because it runs in DataLoader workers that share the
same cores. `pixelsG@S` times the depth crop at a G x G grid instead (pixels48: the default
before 2026-12-07).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from skelact.data.media.features import PIXELS_GRID
from skelact.data.media.video import load_rgb_clip, video_info
from skelact.models.backbones import build_backbone
from skelact.models.encoders import PixelCNN

NTU60_SAMPLES = 56_880
CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/ntu/videos/ntu_sample.avi"
DEFAULT = ",".join(
    ["pixels@160", "pixels48@160", "efficientnet_lite0@160", "efficientnet_lite0@224",
     "resnet18@160", "resnet18@224"]
)  # fmt: skip


def timed(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds (this process, all threads) of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def bench(entries: list[tuple[str, int]], frames: int, batch: int, repeats: int) -> dict:
    """{(arch, size): (wall seconds list, cpu seconds list)} per batch of batch x frames."""
    nets, inputs, times = {}, {}, {}
    for arch, size in entries:
        if arch.startswith("pixels"):  # depth: one channel; the model's CNN runs on the grid
            grid = int(arch.removeprefix("pixels") or PIXELS_GRID)  # pixels48: a 48 x 48 grid
            net = torch.nn.Sequential(
                build_backbone("pixels", None, 1, True, None, grid), PixelCNN(1, grid)
            )
            inputs[arch, size] = torch.rand(batch, frames, 1, size, size)
        else:
            net = build_backbone(arch, None, 3, frozen=True)
            inputs[arch, size] = torch.randn(batch, frames, 3, size, size)  # (N, T, 3, S, S)
        nets[arch, size] = net.eval()
        times[arch, size] = ([], [])
    with torch.inference_mode():
        for key in entries:
            nets[key](inputs[key])  # warm-up
        for _ in range(repeats):
            for key in entries:
                wall, cpu = timed(lambda k=key: nets[k](inputs[k]))
                times[key][0].append(wall)
                times[key][1].append(cpu)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default=DEFAULT, help="comma-separated arch@size entries")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (cores used)")
    ap.add_argument("--frames", type=int, default=16, help="frames per sample")
    ap.add_argument("--batch", type=int, default=2, help="samples per forward pass")
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed turns per backbone (the median is printed)"
    )
    ap.add_argument(
        "--clip",
        type=Path,
        default=CLIP,
        help="video whose decoding is also timed (skipped if absent)",
    )
    from skelact.cli import show_defaults

    show_defaults(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    entries = [(e.split("@")[0], int(e.split("@")[1])) for e in args.backbones.split(",")]
    times = bench(entries, args.frames, args.batch, args.repeats)
    n = args.batch * args.frames
    fps = {k: n / statistics.median(w) for k, (w, _) in times.items()}
    cpu_fps = {k: n / statistics.median(c) for k, (_, c) in times.items()}
    # the reference: ResNet-18 at 224 px (its usual input) when timed, else the first entry
    ref = ("resnet18", 224) if ("resnet18", 224) in entries else entries[0]
    print(
        f"batch {args.batch} samples x {args.frames} frames = {n} frames, {args.threads} torch "
        f"threads, median of {args.repeats} turns; ratio to {ref[0]}@{ref[1]}"
    )
    print(f"{'backbone':>22} {'frames/s':>9} {'ratio':>6} {'frames/CPU-s':>13} {'NTU60 h':>8}")
    for key in entries:
        hours = NTU60_SAMPLES * args.frames / fps[key] / 3600
        print(
            f"{key[0] + '@' + str(key[1]):>22} {fps[key]:9.1f} {fps[key] / fps[ref]:5.2f}x "
            f"{cpu_fps[key]:13.1f} {hours:8.1f}"
        )
    if args.clip.is_file():
        total = video_info(args.clip)[0]
        wall = statistics.median(
            timed(lambda: load_rgb_clip(args.clip, args.frames, size=224))[0]
            for _ in range(args.repeats)
        )
        print(
            f"decode + crop: {wall * 1000:.0f} ms per sample ({args.frames} of {total} frames "
            f"of {args.clip.name}) -> {NTU60_SAMPLES * wall / 3600:.1f} h for NTU60"
        )
    print(f"load average while running: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
