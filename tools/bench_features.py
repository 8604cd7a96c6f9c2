"""Frames/s of frozen ResNet feature extraction on this CPU, and the hours it implies to cache
features for all of NTU60 (56,880 samples).

    python tools/bench_features.py [--arch resnet18] [--size 224] [--frames 16] [--batch 4]

Random weights (pretrained=None): speed does not depend on the weights, and nothing downloads.
Decoding is timed separately on the real NTU clip (--clip) because it runs in DataLoader
workers that share the same cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from skelact.data.media.video import load_rgb_clip, video_info
from skelact.models.encoders import FrameResNet

NTU60_SAMPLES = 56_880
CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/ntu/videos/ntu_sample.avi"


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (this process, all threads) per call."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--frames", type=int, default=16, help="frames per sample")
    ap.add_argument("--batch", type=int, default=4, help="samples per forward pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clip", type=Path, default=CLIP)
    args = ap.parse_args()
    enc = FrameResNet(args.arch, pretrained=None, frozen=True).eval()
    x = torch.randn(args.batch, args.frames, 3, args.size, args.size)  # (N, T, 3, S, S)
    with torch.inference_mode():
        enc(x)  # warm-up
        t, t_cpu = median_seconds(lambda: enc(x), args.repeats)
    n = args.batch * args.frames
    fps = n / t
    hours = NTU60_SAMPLES * args.frames / fps / 3600
    print(
        f"{args.arch} at {args.size}x{args.size}, batch {args.batch} samples x {args.frames} "
        f"frames = {n} frames, {torch.get_num_threads()} torch threads, median of {args.repeats}"
    )
    print(f"encoder          : {fps:7.1f} frames/s ({t * 1000:.0f} ms per batch)")
    # Other processes on the same cores slow the wall clock; CPU time says what an idle
    # machine would do if the threads scaled perfectly (an upper bound).
    idle_fps = n / t_cpu * torch.get_num_threads()
    print(
        f"  from CPU time  : {n / t_cpu:7.1f} frames per CPU-second -> {idle_fps:.1f} frames/s "
        f"on {torch.get_num_threads()} idle cores "
        f"({NTU60_SAMPLES * args.frames / idle_fps / 3600:.1f} h for NTU60)"
    )
    print(
        f"NTU60 estimate   : {NTU60_SAMPLES} samples x {args.frames} frames/sample = "
        f"{NTU60_SAMPLES * args.frames:,} frames -> {hours:.1f} h of encoder time"
    )
    if args.clip.is_file():
        total = video_info(args.clip)[0]
        t_dec, _ = median_seconds(
            lambda: load_rgb_clip(args.clip, args.frames, size=args.size), args.repeats
        )
        dec_hours = NTU60_SAMPLES * t_dec / 3600
        print(
            f"decode + crop    : {t_dec * 1000:7.0f} ms per sample ({args.frames} of {total} "
            f"frames of {args.clip.name}) -> {dec_hours:.1f} h for NTU60 at this clip length"
        )
        print(f"total (same cores, serial): {hours + dec_hours:.1f} h")
    print(f"load average while running: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
