"""Keep MediaPipe's native log lines off the terminal, never a real error.

MediaPipe's C++ code (LiteRT, glog) writes INFO and WARNING lines straight to file descriptor
2; no environment variable silences all of them. `native_quiet()` points fd 2 at a temporary
file around one native call and restores it afterwards. What was captured is written back to
the real stderr when the call raises, and its error lines (glog `E`/`F` severity, "ERROR",
"Error", "Traceback") are written back in any case. `SKELACT_VERBOSE=1` (set by `--verbose`,
inherited by worker processes) turns the redirection off.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

ERROR_LINE = re.compile(rb"^(E\d{4}|F\d{4}|ERROR|Error|FATAL|Traceback|.*\berror:)")


def verbose() -> bool:
    return os.environ.get("SKELACT_VERBOSE", "") not in ("", "0")


def set_verbose(on: bool) -> None:
    """Show MediaPipe's native log lines (this process and the workers it starts)."""
    os.environ["SKELACT_VERBOSE"] = "1" if on else "0"


@contextmanager
def native_quiet():
    """Run the body with fd 2 captured; re-emit errors (all of it if the body raises, but
    not when it was interrupted: Ctrl-C is no native failure)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        except KeyboardInterrupt:
            failed = False
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured = tmp.read()
            lines = captured.splitlines(keepends=True)
            shown = captured if failed else b"".join(x for x in lines if ERROR_LINE.match(x))
            if shown:
                os.write(2, shown)
