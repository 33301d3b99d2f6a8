"""One root exception; the CLIs map these to exit codes in one place (``exit_code``)."""
from __future__ import annotations

import sys
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


def run_cli(prog: str, body: Callable[[], int]) -> NoReturn:
    """Run a CLI body; map SoakError to its exit code with a one-line message."""
    try:
        code = body()
    except SoakError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
