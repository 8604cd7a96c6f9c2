"""Training throughput of the default skeleton model at NTU shape, and projected epoch times.

Builds the recognizer from the real config (configs/ composed with hydra, plus any overrides),
with every skeleton stream of the modality, feeds random tensors of NTU's shape (N, K=1, M=2,
T, V=25, C = 3 x each stream's feature kinds)
and times forward + backward + optimizer step, as `skelact.engine.train_one_epoch` does.
Data loading is not included (skeleton transforms cost about 1-2 ms per sample per worker).

    python tools/bench_train.py                      # CPU, and CUDA when available
    python tools/bench_train.py --frames 32 model.core.hidden=256
    python tools/bench_train.py trainer.precision=fp32   # without bfloat16 autocast
    PYTHONPATH=. python tools/bench_train.py --threads 1 --compare   # vs the single stream
    python tools/bench_train.py --threads 1 --fp32 --rounds 3   # bf16 autocast vs float32
    python tools/bench_train.py --threads 1 --unfolded --rounds 3   # folded or not
    python tools/bench_train.py --threads 1 --onednn --rounds 3   # torch's LSTM or oneDNN's
    python tools/bench_train.py --threads 1 --compile --rounds 3   # eager or torch.compile
    python tools/bench_train.py trainer=consistency   # 2 views of each sample
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from skelact.config import compose_config
from skelact.data.datasets import skeleton_streams
from skelact.data.prep.channels import MotionFeatures
from skelact.losses import stream_loss, training_forward, view_consistency
from skelact.models.recognizer import build_recognizer
from skelact.models.temporal import RecurrentCore
from skelact.optim import make_optimizer
from skelact.runtime import train_dtype

# training-set sizes of the standard protocols (after removing the missing skeletons)
TRAIN_SIZES = {
    "ntu60_xsub": 40_091,
    "ntu60_xview": 37_646,
    "ntu120_xsub": 63_026,
    "ntu120_xset": 54_468,
}


def build(overrides: list[str], device: torch.device, fold: bool = True):
    """The configured recognizer for NTU (60 classes, 25 joints, 2 bodies): every skeleton
    stream of the modality, each with its own input channels. Returns model, cfg, specs.
    `fold`: False leaves the channel kinds out of the specs, so the distance stream's first
    layer reads every column (the model before commit f1b0ce7, the same function)."""
    cfg = compose_config(["data=ntu60_xsub", "data.ann_file=none", *overrides])
    kinds = skeleton_streams(cfg.data, cfg.modality.streams)
    if list(kinds) != list(cfg.modality.streams):
        raise SystemExit(f"bench_train measures skeleton streams only, not {cfg.modality.streams}")
    specs = {
        name: {
            "num_joints": 25,
            "channels": MotionFeatures.channels(ks, 3, 25),
            "num_bodies": 2,
            "layout": "ntu25",
            **({"kinds": list(ks)} if fold else {}),
        }
        for name, ks in kinds.items()
    }
    model = build_recognizer(cfg.model, list(kinds), 60, specs).to(device)
    return model, cfg, specs


def samples_per_second(model, cfg, x: dict, y, steps: int, warmup: int, views: int = 1) -> float:
    """Mean samples/s over `steps` training steps after `warmup` untimed ones. `views`: the
    rows of x and y are that many augmented views of each sample (adjacent), trained with
    trainer.consistency as the engine does; a sample counts once."""
    tcfg = cfg.trainer
    consistency = float(tcfg.get("consistency", 0.0))
    opt = make_optimizer(model.parameters(), tcfg)
    model.train()
    dtype = train_dtype(tcfg.precision, y.device)

    def step():
        out = training_forward(model, x, dtype)
        loss = stream_loss(out, y, tcfg.label_smoothing, tcfg.aux_loss_weight)
        if consistency:
            loss = loss + view_consistency(out, views, consistency)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()

    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if y.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * len(y) / views / (time.perf_counter() - start)


def bench(
    device: torch.device,
    args,
    overrides: list[str],
    fold: bool = True,
    native: bool = True,
    compiled: bool = False,
) -> float:
    """`native` False: the recurrent core trains on oneDNN's LSTM in float32 too (the code
    before torch's own LSTM was chosen there). `compiled`: the model wrapped in
    torch.compile (inductor; compiled during the warm-up steps, which are not timed)."""
    model, cfg, specs = build(overrides, device, fold)
    for module in model.modules():
        if isinstance(module, RecurrentCore):
            module.native_training = native
    if compiled:
        model = torch.compile(model, dynamic=False)
    params = sum(p.numel() for p in model.parameters())
    # the engine feeds (N*K, M, T, V, C) per stream, K = 1 clip in training (or trainer.views)
    views = int(cfg.trainer.get("views", 1))
    rows = args.batch_size * views
    x = {
        name: torch.randn((rows, 2, args.frames, 25, spec["channels"]), device=device)
        for name, spec in specs.items()
    }
    y = torch.randint(0, 60, (args.batch_size,), device=device).repeat_interleave(views)
    channels = "+".join(str(spec["channels"]) for spec in specs.values())
    steps = args.steps if device.type == "cpu" else args.steps * 5
    rate = samples_per_second(model, cfg, x, y, steps, args.warmup, views)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    dtype = train_dtype(cfg.trainer.precision, device)
    threads += ", float32" if dtype is None else f", {str(dtype)[6:]} autocast"
    print(
        f"\n{' '.join(overrides) or 'default recipe'}{'' if fold else ' (unfolded)'}"
        f"{'' if native else ' (oneDNN LSTM)'}{' (torch.compile)' if compiled else ''}\n"
        f"device {device}{threads}: {params:,} parameters, input (N, M, T, V, C) = "
        f"{(rows, 2, args.frames, 25, channels)}"
        + (f" ({views} views of each of {args.batch_size} samples)" if views > 1 else "")
    )
    print(f"  train throughput: {rate:.1f} samples/s (forward + backward + AdamW step)")
    for name, size in TRAIN_SIZES.items():
        sec = size / rate
        print(f"  {name:12s} {size:6d} training samples: {sec / 60:7.1f} min/epoch")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step")
    parser.add_argument("--frames", type=int, default=64, help="T, frames per clip")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (x5 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    parser.add_argument(
        "--cpu-only", action="store_true", help="time on the CPU even where CUDA is available"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also time the single-stream recipe (modality=skeleton model=bilstm), print the ratio",
    )
    parser.add_argument(
        "--fp32",
        action="store_true",
        help="also time trainer.precision=fp32 (no bfloat16 autocast), in turns, print the ratio",
    )
    parser.add_argument(
        "--unfolded",
        action="store_true",
        help="also time the distance stream's first layer over every column (not each pair of "
        "joints once), in turns, print the ratio",
    )
    parser.add_argument(
        "--onednn",
        action="store_true",
        help="also time the recurrent core on oneDNN's LSTM in float32 training (not torch's "
        "own), in turns, print the ratio",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the model wrapped in torch.compile, in turns, print the ratio",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="--fp32, --unfolded, --onednn, --compile: timings of each, in turns",
    )
    parser.add_argument("overrides", nargs="*", help="hydra overrides, e.g. model.core.hidden=256")
    from skelact.cli import show_defaults

    show_defaults(parser)
    args = parser.parse_args()
    if args.fp32 + args.unfolded + args.onednn + args.compile > 1:
        parser.error("--fp32, --unfolded, --onednn or --compile, one at a time")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    single = ["modality=skeleton", "model=bilstm"]
    for device in devices:
        if args.fp32 or args.unfolded or args.onednn or args.compile:
            if args.fp32:
                other = {"overrides": [*args.overrides, "trainer.precision=fp32"]}
                what = "configured precision vs fp32"
            elif args.unfolded:
                other, what = {"fold": False}, "folded vs unfolded distance stream"
            elif args.compile:
                other, what = {"compiled": True}, "eager vs torch.compile"
            else:
                other, what = {"native": False}, "torch's LSTM vs oneDNN's"
            other = {"overrides": args.overrides, **other}
            rounds = [
                (bench(device, args, args.overrides), bench(device, args, **other))
                for _ in range(args.rounds)
            ]
            ratios = [a / b for a, b in rounds]
            each = " / ".join(f"{a:.1f} vs {b:.1f} = {a / b:.2f}x" for a, b in rounds)
            print(
                f"\n{device}: {what}, per round: {each}; "
                f"mean ratio {sum(ratios) / len(ratios):.2f}x"
            )
            continue
        rate = bench(device, args, args.overrides)
        if args.compare:
            base = bench(device, args, single + args.overrides)
            print(
                f"\n{device}: {rate:.1f} / {base:.1f} samples/s = "
                f"{rate / base:.2f}x the single-stream recipe"
            )


if __name__ == "__main__":
    main()
