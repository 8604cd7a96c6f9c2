"""What `skelact` prints: its own log lines, plain; an error it raises on purpose as one line;
native libraries (OpenCV, FFmpeg) kept quiet; and no run folder left by a run that never
started."""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


def quiet_native_libraries() -> None:
    """Keep OpenCV's and FFmpeg's own warnings ("moov atom not found", "can't open camera by
    index") off the terminal: skelact reports what failed in its own words. Environment
    variables, read when OpenCV first opens a video (also in worker processes); a value the
    user set wins, and `--verbose` leaves them unset."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


def setup_logging() -> None:
    """skelact's INFO lines as plain text; other libraries only from WARNING up (so no
    matplotlib "generated new fontManager")."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("skelact").setLevel(logging.INFO)


def expected_errors() -> tuple[type[BaseException], ...]:
    """The errors skelact raises on purpose: input problems (missing or unsafe file, malformed
    data, contract mismatch), configuration errors (hydra, omegaconf), and what the system says
    of a path (a folder where a file was meant, no permission, a full disk: the message names
    the path)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (OSError, ValueError, RuntimeError, HydraException, OmegaConfBaseException)


_DETAIL = ("full_key:", "object_type=", "reference_type=")  # omegaconf's context lines


def one_line(err: BaseException) -> str:
    """The error's message on one line (omegaconf's context lines left out; an error raised
    in a DataLoader worker without the worker's traceback, which torch puts in the message); a
    configuration error adds its cause's first line."""
    text = str(err)
    if text.startswith(f"Caught {type(err).__name__} in DataLoader worker") and (
        f"{type(err).__name__}: " in text
    ):  # torch's re-raise of a worker's error: its message, not the worker's traceback
        text = text.rsplit(f"{type(err).__name__}: ", 1)[1]
    cause = err.__cause__
    if cause is not None and type(cause).__module__.startswith(("omegaconf", "hydra")):
        text += "\n" + str(cause).splitlines()[0]
    text = text.split("\nConfig search path:")[0]  # hydra's search path: noise to a user
    lines = [x.strip() for x in text.splitlines()]
    return " ".join(x for x in lines if x and not x.startswith(_DETAIL))


def one_line_exit(command: str, err: BaseException) -> SystemExit:
    """`skelact COMMAND: error: MESSAGE`, one line, as the exit to raise."""
    text = one_line(err)
    if not text.startswith(f"skelact {command}"):
        text = f"skelact {command}: error: {text.removeprefix('skelact: ')}"
    return SystemExit(text)


@contextmanager
def no_folder_left(path: str | Path):
    """Remove `path` when the body fails and the folder is new and holds no checkpoint: a run
    that never started leaves nothing behind (a resumed or trained run keeps its folder)."""
    path = Path(path)
    existed = path.exists()
    try:
        yield
    except (Exception, SystemExit):
        if not existed and path.is_dir() and not (path / "checkpoints").exists():
            shutil.rmtree(path, ignore_errors=True)
        raise


class RunLog(logging.Handler):
    """skelact's log lines into <run dir>/train.log, from the moment training has created the
    folder (earlier lines are kept and written first)."""

    def __init__(self, run_dir: str | Path):
        super().__init__()
        self.path = Path(run_dir) / "train.log"
        self.pending: list[str] = []
        self.file = None
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.pending.append(self.format(record) + "\n")
        if self.file is None and self.path.parent.is_dir():
            self.file = open(self.path, "a")  # noqa: SIM115 - open for the run's length
        if self.file is not None:
            self.file.writelines(self.pending)
            self.file.flush()
            self.pending = []

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


@contextmanager
def run_log(run_dir: str | Path):
    """skelact's log lines of the body also into <run_dir>/train.log (`RunLog`): what `skelact
    train` and the demo's runs write."""
    handler = RunLog(run_dir)
    logging.getLogger("skelact").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("skelact").removeHandler(handler)
        handler.close()
