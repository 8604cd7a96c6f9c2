"""Peak memory of converting a pyskl pickle into a store (`open_annotations` on a .pkl).

    python tools/bench_pickle_memory.py [--samples 56578] [--protocols 2 4] [--tmp /tmp/...]
                                        [--baseline] [--compare /path/to/other/checkout]

Writes an NTU60-sized pickle in pyskl's layout ({"split", "annotations"}; per sample
"frame_dir", "label", "img_shape", "original_shape", "total_frames" and "keypoint"
(2, T, 25, 3) float32, T in 70..100), as pickle.dump writes it in that protocol (mmcv writes
protocol 2), then converts it in a fresh process while this one samples that process's RSS,
PSS and Pss_Anon every 0.1 s; the peak RSS is the kernel's (VmHWM). `--baseline` also loads the
same file with the in-memory restricted loader (`load_pickle`, C unpickler), which holds it
whole; `--compare DIR` also converts it with the skelact checkout in DIR (an older commit).
Files go to --tmp and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIG = 256  # bytes: payloads from this size are not kept by the writer's memo (see LeanPickler)


class LeanPickler(pickle._Pickler):
    """pickle's own (pure-Python) pickler writing the same opcodes, memo puts included, but
    not keeping the array bytes it has written alive: pickle.dump keeps every object in its
    memo, so writing a 3 GB file would take 3 GB (6 GB for protocol 2) here."""

    def memoize(self, obj):
        if _big(obj) or (isinstance(obj, tuple) and any(_big(x) for x in obj)):
            idx = len(self.memo)
            self.write(self.put(idx))
            self.memo[("written", idx)] = (idx, None)  # keeps indices in step; never an id
            return
        super().memoize(obj)


def _big(x) -> bool:
    return isinstance(x, (bytes, str)) and len(x) >= BIG


def ntu60_like(n: int) -> dict:
    """pyskl-shaped annotations; keypoints are views of a few random arrays (small here)."""
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(64, 2, 100, 25, 3)).astype(np.float32)
    anns = []
    for i in range(n):
        t = int(rng.integers(70, 101))
        name = f"S{1 + i % 17:03d}C{1 + i % 3:03d}P{1 + i // 60 % 40:03d}R001A{i:06d}"
        anns.append({"frame_dir": name, "label": i % 60, "img_shape": (1080, 1920),
                     "original_shape": (1080, 1920), "total_frames": t,
                     "keypoint": pool[i % 64, :, :t]})  # fmt: skip
    names = [a["frame_dir"] for a in anns]
    split = {"xsub_train": names[: n * 7 // 10], "xsub_val": names[n * 7 // 10 :]}
    return {"split": split, "annotations": anns}


def write_pickle(path: Path, n: int, protocol: int) -> float:
    start = time.perf_counter()
    with open(path, "wb") as f:
        LeanPickler(f, protocol).dump(ntu60_like(n))
    return time.perf_counter() - start


CHILD = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
if sys.argv[1] == "store":
    from skelact.data.formats.annotations import open_annotations
    store = open_annotations(sys.argv[2])
    count = len(store)
    kp = store[count - 1]["keypoint"].shape
else:
    from skelact.data.formats.pickles import load_pickle
    data = load_pickle(sys.argv[2])
    count = len(data["annotations"])
    kp = data["annotations"][-1]["keypoint"].shape
status = dict(l.split(":", 1) for l in Path("/proc/self/status").read_text().splitlines())
print(json.dumps({"seconds": time.perf_counter() - start, "samples": count, "last": kp,
                  "hwm_kib": int(status["VmHWM"].split()[0])}))
"""


def smaps(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines()[1:])
    return {k: int(fields[k].split()[0]) for k in ("Rss", "Pss", "Pss_Anon")}


def convert(pkl: Path, how: str, cache: Path, code: Path = ROOT) -> dict:
    """Run the conversion (or the in-memory load) with skelact from `code` in a child; its
    peaks in MiB."""
    env = {**os.environ, "SKELACT_CACHE": str(cache), "PYTHONPATH": str(code)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, how, str(pkl)], env=env,
                            cwd=code, stdout=subprocess.PIPE, text=True)  # fmt: skip
    peak = {"Rss": 0, "Pss": 0, "Pss_Anon": 0}

    def sample():
        while proc.poll() is None:
            for k, v in smaps(proc.pid).items():
                peak[k] = max(peak[k], v)
            time.sleep(0.1)

    thread = threading.Thread(target=sample)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode:
        raise SystemExit(f"{how} of {pkl} failed")
    result = json.loads(out)
    shutil.rmtree(cache, ignore_errors=True)
    mib = {k: v / 1024 for k, v in peak.items()}
    return {**result, "hwm": result["hwm_kib"] / 1024, **mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[56_578], help="samples in each pickle written"
    )
    parser.add_argument(
        "--protocols",
        type=int,
        nargs="+",
        default=[2, 4],
        help="pickle protocols to write (mmcv writes 2)",
    )
    parser.add_argument(
        "--tmp", default="/tmp/skelact_pickle_bench", help="scratch folder for the pickles"
    )
    parser.add_argument("--baseline", action="store_true", help="also the in-memory load")
    parser.add_argument("--compare", help="also convert with the skelact checkout at this path")
    from skelact.cli import show_defaults

    show_defaults(parser)
    args = parser.parse_args()
    tmp = Path(args.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hows = [("store", ROOT)] + [("memory", ROOT)] * args.baseline
    if args.compare:
        hows.append(("store", Path(args.compare)))
    print(
        f"samples  proto  file GB  write s | {'how':28s}   s  peak RSS  (sampled  RSS     PSS "
        "Pss_Anon) MiB  peak/file"
    )
    try:
        for n in args.samples:
            for proto in args.protocols:
                pkl = tmp / f"ntu60_p{proto}_{n}.pkl"
                wrote = write_pickle(pkl, n, proto)
                size = pkl.stat().st_size
                for how, code in hows:
                    r = convert(pkl, how, tmp / "cache", code)
                    assert r["samples"] == n, r
                    name = "open_annotations" if how == "store" else "load_pickle (memory)"
                    name += "" if code == ROOT else f" ({code.name})"
                    print(f"{n:7d}  {proto:5d}  {size / 1e9:7.2f}  {wrote:7.0f} | {name:28s}"
                          f"{r['seconds']:4.0f}  {r['hwm']:8.0f}  ({r['Rss']:6.0f} "
                          f"{r['Pss']:6.0f} {r['Pss_Anon']:6.0f})"
                          f"{r['hwm'] * 2**20 / size:12.2f}", flush=True)  # fmt: skip
                pkl.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
