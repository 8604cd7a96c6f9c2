"""Training throughput of the default skeleton stream at NTU shape, and projected epoch times.

Builds the recognizer from the real config (configs/ composed with hydra, plus any overrides),
feeds random tensors of NTU's shape (N, K=1, M=2, T, V=25, C = 3 x the default feature kinds)
and times forward + backward + optimizer step, as `skelact.engine.train_one_epoch` does.
Data loading is not included (skeleton transforms cost about 1-2 ms per sample per worker).

    python tools/bench_train.py                      # CPU, and CUDA when available
    python tools/bench_train.py --frames 32 model.core.hidden=256
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from skelact.config import compose_config
from skelact.data.transforms import MotionFeatures
from skelact.engine import stream_loss
from skelact.models.recognizer import build_recognizer

# training-set sizes of the standard protocols (after removing the missing skeletons)
TRAIN_SIZES = {
    "ntu60_xsub": 40_091,
    "ntu60_xview": 37_646,
    "ntu120_xsub": 63_026,
    "ntu120_xset": 54_468,
}


def build(overrides: list[str], device: torch.device):
    """The default recognizer for NTU (60 classes, 25 joints, 2 bodies) and its config."""
    cfg = compose_config(["data=ntu60_xsub", "data.ann_file=none", *overrides])
    channels = MotionFeatures.channels(cfg.data.skeleton.features, 3, 25)
    spec = {"num_joints": 25, "channels": channels, "num_bodies": 2}
    model = build_recognizer(cfg.model, ["skeleton"], 60, {"skeleton": spec}).to(device)
    return model, cfg, channels


def samples_per_second(model, cfg, x, y, steps: int, warmup: int) -> float:
    """Mean samples/s over `steps` training steps after `warmup` untimed ones."""
    tcfg = cfg.trainer
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    model.train()

    def step():
        out = model({"skeleton": x})
        loss = stream_loss(out, y, tcfg.label_smoothing, tcfg.aux_loss_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()

    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * len(y) / (time.perf_counter() - start)


def bench(device: torch.device, args) -> None:
    model, cfg, channels = build(args.overrides, device)
    params = sum(p.numel() for p in model.parameters())
    shape = (args.batch_size, 1, 2, args.frames, 25, channels)  # (N, K, M, T, V, C)
    x = torch.randn(shape, device=device).flatten(0, 1)  # engine feeds (N*K, M, T, V, C)
    y = torch.randint(0, 60, (args.batch_size,), device=device)
    steps = args.steps if device.type == "cpu" else args.steps * 5
    rate = samples_per_second(model, cfg, x, y, steps, args.warmup)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(
        f"\ndevice {device}{threads}: {params:,} parameters, input (N, M, T, V, C) = "
        f"{(args.batch_size, 2, args.frames, 25, channels)}"
    )
    print(f"  train throughput: {rate:.1f} samples/s (forward + backward + AdamW step)")
    for name, size in TRAIN_SIZES.items():
        sec = size / rate
        print(f"  {name:12s} {size:6d} training samples: {sec / 60:7.1f} min/epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=64, help="T, frames per clip")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (x5 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("overrides", nargs="*", help="hydra overrides, e.g. model.core.hidden=256")
    args = parser.parse_args()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    for device in devices:
        bench(device, args)


if __name__ == "__main__":
    main()
