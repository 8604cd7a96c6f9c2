"""Live prediction on a real video read as a live source, against the offline timeline.

Runs `Model.stream` (what `skelact predict --live` runs) on the NTU clip, delivered at its own
30 frames/s, and prints frames/s, dropped frames, the latency per update split into pose and
model, and the lag of each update behind its newest frame. Then it classifies the same
windows offline (all frames, as `skelact predict --window` does) and prints how often the
live label agrees and how far the probabilities differ (live windows miss the dropped
frames). The checkpoint is bench_infer's: the default recipe, here with one body and 40
epochs on the 3 real NTU skeleton files of the xsub training split (so that its output
depends on its input; its labels are not meant to be right).

    python tools/bench_live.py [--window 1.0] [--every 0.25] [--video PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from bench_infer import ROOT, make_checkpoint

VIDEO = ROOT.parent / "shared" / "data" / "ntu" / "videos" / "ntu_sample.avi"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--window", type=float, default=1.0, help="seconds of video per live prediction"
    )
    ap.add_argument("--every", type=float, default=0.25, help="seconds between live predictions")
    ap.add_argument("--video", default=str(VIDEO), help="video played as a live source")
    from skelact.cli import show_defaults

    show_defaults(ap)
    args = ap.parse_args()
    import skelact

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp), bodies=1, epochs=40)
        model = skelact.load(ckpt, threads=1)
        live = model.stream(args.video, window=args.window, every=args.every, mirrored=True)
        updates = list(live)
        offline = model.convert(args.video, mirrored=True)  # every frame
    fps = float(offline["fps"])
    agree, diffs = [], []
    for u in updates:
        end = int(round(u.time * fps)) + 1
        chunk = offline["keypoint"][:, max(0, end - int(round(args.window * fps))) : end]
        res = model.predict(chunk)
        agree.append(res.label == u.label)
        diffs.append(np.abs(res.probs - u.probs).max())
    summary = live.summary()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(json.dumps(summary, indent=1))
    print(
        f"live vs offline windows (same end frame): label agreement {np.mean(agree):.2f} "
        f"over {len(updates)} updates, max |probability diff| median {np.median(diffs):.2e}"
        f" max {np.max(diffs):.2e}; a live label for [t - {args.window}s, t] is out at source "
        f"time t + {summary['lag_s_median']}s (median lag), the offline timeline row of the "
        f"same window starts at t - {args.window}s"
    )


if __name__ == "__main__":
    main()
