"""Inference speed on CPU: torch eager against onnxruntime, side by side, as ratios.

Builds a checkpoint of the default recipe at NTU settings (60 classes, 2 bodies, 25 joints;
whatever streams the default has: five skeleton streams since 2026-12-05) by preparing the
real NTU files in ../shared/data/ntu/skeletons and training one epoch on them, exports it
with `skelact export`, and feeds both backends the same preprocessed real clips (every
stream's input):

- single-clip latency: one clip (batch 1), median over repeats, in ms;
- batch-64 throughput: 64 clips per call, clips/s;
- one `Model.predict` of a whole sample (numpy preprocessing + 5 test clips), in ms.

Both backends get the same thread count (--threads, default 1: the machine is shared).

    python tools/bench_infer.py [--threads 1] [--repeats 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SKELETONS = ROOT.parent / "shared" / "data" / "ntu" / "skeletons"


def make_checkpoint(work: Path, bodies: int = 2, epochs: int = 1) -> Path:
    """prepare ntu on the real files, then `epochs` epochs of the default recipe."""
    from skelact.config import compose_config
    from skelact.data.sources.ntu_prepare import prepare_ntu
    from skelact.train import train

    ann = work / "ntu60.pkl"
    prepare_ntu(SKELETONS, ann, dataset="ntu60")
    overrides = [f"data.ann_file={ann}", "data=ntu60_xsub", "data.num_classes=60"]
    overrides += [f"trainer.epochs={epochs}", "trainer.num_workers=0", "trainer.progress=false"]
    overrides += ["trainer.threads=1", f"data.skeleton.num_bodies={bodies}"]
    train(compose_config(overrides), work / "run")
    return work / "run" / "checkpoints" / "last.pt"


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads")
    ap.add_argument(
        "--repeats",
        type=int,
        default=50,
        help="timed calls of one clip (batch 64 and predict: a fifth of them)",
    )
    from skelact.cli import show_defaults

    show_defaults(ap)
    args = ap.parse_args()
    import onnxruntime
    import torch

    import skelact
    from skelact.data.sources.ntu_skeleton import load_skeleton
    from skelact.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = make_checkpoint(work)
        onnx_path = export_onnx(ckpt, work / "model.onnx")
        models = {
            "torch eager": skelact.load(ckpt, threads=args.threads),
            "onnxruntime": skelact.load(onnx_path, threads=args.threads),
        }
        samples = [load_skeleton(f, 2) for f in sorted(SKELETONS.glob("*.skeleton"))]
        ref = models["torch eager"]
        per_sample = [ref.inputs(kp)[0] for kp in samples]  # {stream: (K, ...)} each
        clips = {s: np.concatenate([x[s] for x in per_sample]) for s in per_sample[0]}
        first = {s: v[:1] for s, v in clips.items()}
        batch64 = {s: v[np.arange(64) % len(v)] for s, v in clips.items()}
        rows = {}
        for name, model in models.items():
            one = timed(lambda m=model: m.backend(first), args.repeats)
            b64 = timed(lambda m=model: m.backend(batch64), args.repeats // 5 + 1)
            pred = timed(lambda m=model: m.predict(samples[0]), args.repeats // 5 + 1)
            rows[name] = (1000 * one, 64 / b64, 1000 * pred)
        diff = np.abs(models["onnxruntime"].backend(batch64)[0] - ref.backend(batch64)[0]).max()
    spec = ref.contract
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"model: {spec.summary()}, {sum(p.numel() for p in ref.backend.net.parameters())} "
        f"parameters; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{args.threads} thread(s); real NTU clips, max |logit diff| {diff:.2e}"
    )
    print(f"{'':<14}{'1 clip (ms)':>14}{'batch 64 (clips/s)':>22}{'predict (ms)':>16}")
    for name, (one, thr, pred) in rows.items():
        print(f"{name:<14}{one:>14.2f}{thr:>22.0f}{pred:>16.2f}")
    t, o = rows["torch eager"], rows["onnxruntime"]
    print(
        f"{'ort / torch':<14}{t[0] / o[0]:>13.2f}x{o[1] / t[1]:>21.2f}x{t[2] / o[2]:>15.2f}x"
        "   (speed-up of onnxruntime; > 1: faster)"
    )


if __name__ == "__main__":
    main()
