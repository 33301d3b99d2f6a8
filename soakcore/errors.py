"""One root exception; the CLIs map these to exit codes in one place (``exit_code``)."""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, NoReturn


class SoakError(Exception):
    """Root of every error this stack raises on purpose. Message is one line."""

    exit_code = 1


class UsageError(SoakError):
    """Bad flag, bad plan, bad config: nothing has started. Exit 2."""

    exit_code = 2


class InputError(UsageError):
    """A bad input file; the message names file, field and reason. Exit 2."""

    def __init__(self, path: object, field: str, reason: str) -> None:
        super().__init__(f"{path}: {field}: {reason}")
        self.path, self.field, self.reason = path, field, reason


class EvaluationError(SoakError):
    """Could not evaluate (Prometheus unreachable, bad query). Exit 3."""

    exit_code = 3


# Where an unexpected exception's traceback goes: the command's own directory (its run or
# output folder) once it knows it, else a temporary file. Set with ``crash_log_dir``.
_CRASH_LOG_DIR: list[Path] = []


def crash_log_dir(path: Path | None) -> None:
    """Tell ``run_cli`` where to write the traceback of an unexpected exception."""
    _CRASH_LOG_DIR[:] = [path] if path is not None else []


def _write_crash_log(prog: str) -> str:
    """The current exception's full traceback in a log file; its path (or why none)."""
    text = traceback.format_exc()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for folder in _CRASH_LOG_DIR:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{prog}-crash-{stamp}-{os.getpid()}.log"
            path.write_text(text)
            return str(path)
        except OSError:
            pass   # an unwritable output folder: fall back to a temporary file
    try:
        fd, name = tempfile.mkstemp(prefix=f"{prog}-crash-{stamp}-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return name
    except OSError as exc:
        return f"(none: cannot write a log file: {exc})"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def run_cli(prog: str, body: Callable[[], int]) -> NoReturn:
    """Run a CLI body; map SoakError to its exit code with a one-line message.

    Anything else is a bug or an environment we did not foresee, never a verdict: exit 3
    ("could not evaluate", so CI never reads it as a failed gate) with one line on stderr
    naming the log file that holds the full traceback."""
    try:
        code = body()
    except SoakError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # noqa: BLE001 (the one place unexpected errors are mapped)
        log = _write_crash_log(prog)
        print(f"{prog}: internal error: {_one_line(exc)} (traceback in {log})", file=sys.stderr)
        code = EvaluationError.exit_code
    sys.exit(code)
