"""Files written atomically: a kill, a full disk or an exception never leaves a half-written
file under the final name, nor the temporary file beside it. And a bar of a file's bytes read or
written, for the long single calls (pickle.load, pickle.dump) that have no loop of their own."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write through a temporary file beside `path`; flushed, fsynced and renamed onto `path`
    when the block ends, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def byte_progress(f: IO, total: int, desc: str, every: float = 0.5) -> Iterator[None]:
    """A bar of `f`'s position (bytes read or written so far, out of about `total`), polled
    every `every` seconds from a thread (nothing on the reading or writing path); shown on a
    terminal only."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=None, leave=False)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(every):
            bar.update(f.tell() - bar.n)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if not f.closed:  # where it ended, between the last poll and here
            bar.update(f.tell() - bar.n)
        bar.close()


def write_report(out: str | os.PathLike, report: dict) -> Path:
    """`<out>.report.json` beside an annotation file that `prepare` or `convert` wrote (the
    file's whole name kept, so a store and a pickle of one stem keep their own): the report,
    as JSON; returns its path."""
    out = Path(out)
    path = out.with_name(out.name + ".report.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (links and relative paths resolved); False where either
    is not there."""
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False
