"""Run README.md's examples as written and print (or write back) their output.

A block is an example when the line before it is `<!-- example: NAME -->`; the block after
`<!-- output: NAME -->` is what it printed. The examples start from what `skelact demo` leaves
in `skelact_demo/` and use `clip.avi` (a video of one person) and `two_people.avi`; this
script makes those two from NTU's sample clip.

    python tools/readme_examples.py --demo skelact_demo            # print the outputs
    python tools/readme_examples.py --demo skelact_demo --write    # and put them in README.md

Without --demo it runs `skelact demo` first (about 2 min on 2 cores). `tests/test_readme.py`
runs the same blocks on a one-epoch demo model and compares their output line by line, with
numbers and class names masked.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLIP = ROOT.parent / "shared" / "data" / "ntu" / "videos" / "ntu_sample.avi"
MARK = re.compile(r"^<!-- (example|output): (\S+) -->\n```(\w*)\n(.*?)^```\n", re.M | re.S)


def blocks(text: str) -> dict[str, dict[str, tuple[str, str, tuple[int, int]]]]:
    """{"example"|"output": {name: (language, body, (start, end) of the body in text)}}."""
    found: dict[str, dict] = {"example": {}, "output": {}}
    for m in MARK.finditer(text):
        found[m.group(1)][m.group(2)] = (m.group(3), m.group(4), m.span(4))
    return found


def prepare_workdir(work: Path, demo: Path, clip: Path = CLIP) -> None:
    """`work` gets skelact_demo (a link to `demo`), clip.avi and two_people.avi."""
    from tools.two_people_clip import two_people_clip

    work.mkdir(parents=True, exist_ok=True)
    if not (work / "skelact_demo").exists():
        (work / "skelact_demo").symlink_to(demo.resolve())
    shutil.copyfile(clip, work / "clip.avi")
    two_people_clip(str(work / "clip.avi"), str(work / "two_people.avi"))


def run_example(language: str, body: str, work: Path, in_process: bool = False) -> str:
    """What the block prints (stdout, then stderr), run in `work` with this checkout's code.

    in_process: run the Python block with exec and each `skelact ...` line of a bash block
    through `skelact.cli.main` in this process, stdout captured (the test's faster way: no
    interpreter start per block)."""
    if in_process:
        return _run_in_process(language, body, work)
    cmd = [sys.executable, "-c", body] if language == "python" else ["bash", "-e", "-c", body]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode:
        raise RuntimeError(f"README example failed ({res.returncode}):\n{body}\n{res.stderr}")
    return res.stdout + res.stderr


def _run_in_process(language: str, body: str, work: Path) -> str:
    import contextlib
    import io
    import shlex

    from skelact.cli import main

    out, before = io.StringIO(), Path.cwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(out):
            if language == "python":
                exec(compile(body, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102
            for line in body.splitlines() if language == "bash" else []:
                args = shlex.split(line, comments=True)
                if args and args[0] != "skelact":
                    raise ValueError(f"in process: only skelact commands, not {line!r}")
                if args:
                    main(args[1:])
    finally:
        os.chdir(before)
    return out.getvalue()


def run_all(work: Path, in_process: bool = False) -> dict[str, str]:
    """{name: output} of every README example that has an output block."""
    found = blocks(README.read_text())
    return {
        name: run_example(*found["example"][name][:2], work, in_process)
        for name in found["output"]
        if name in found["example"]
    }


def write_outputs(outputs: dict[str, str]) -> None:
    """Replace each output block of README.md with what its example printed."""
    text = README.read_text()
    spans = blocks(text)["output"]
    for name in sorted(outputs, key=lambda n: spans[n][2][0], reverse=True):
        start, end = spans[name][2]
        text = text[:start] + outputs[name].rstrip("\n") + "\n" + text[end:]
    README.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", help="a skelact demo folder (default: run the demo)")
    p.add_argument("--workdir", help="where the examples run (default: a temporary folder)")
    p.add_argument("--write", action="store_true", help="write the outputs into README.md")
    from skelact.cli import show_defaults

    show_defaults(p)
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="readme_"))
    demo = Path(args.demo) if args.demo else work / "demo"
    if not args.demo:
        subprocess.run([sys.executable, "-m", "skelact.cli", "demo", "--out", str(demo)],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    prepare_workdir(work, demo)
    outputs = run_all(work)
    for name, out in outputs.items():
        print(f"--- {name}\n{out}")
    if args.write:
        write_outputs(outputs)
        print(f"wrote {len(outputs)} outputs into {README}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
