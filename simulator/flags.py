"""A flag parser that behaves like the real nodes' hand-written Rust loops, not like argparse.

Both real binaries walk argv once, match each argument exactly (no abbreviations, no
``--flag=value``), take the next argument verbatim as the value (even if it starts with
``-``), let a repeated flag overwrite (or, for list flags, append), and stop at the first
error with a one-line message; ``main`` then prints that line on stderr, the help text on
stdout and exits 1. ``-h``/``--help`` prints the help and exits 0.

The fault switches (simulator-only) are defined here once and shared by both generations.
"""
from __future__ import annotations

import ipaddress
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from soakcore.distfs import DISTFS_REASONS

# Real exit code of both binaries for a parse error and for a start-up error (G2.md section 1;
# world_viewer_live's main does the same: eprintln, print_help, exit 1).
PARSE_EXIT = 1


class ParseError(Exception):
    """A bad command line: the message is the real node's one line."""


@dataclass(frozen=True)
class Flag:
    name: str
    dest: str
    parse: Callable[[str], Any] | None = None   # None: a switch that stores ``const``
    const: Any = True
    repeat: bool = False                       # values collect into a list
    error: str = ""                            # message when the value is missing or invalid


def parse_flags(argv: list[str], table: dict[str, Flag], opts: dict[str, Any],
                other: Callable[[str], None], missing: Callable[[Flag], str]) -> dict[str, Any]:
    """Walk ``argv`` like the real loop; ``other`` handles an argument no flag matches.

    The simulator's own switches (``--fault-*``, ``--seed``, ``--status-listen``) may also be
    written ``--flag=value``: the real nodes never see them, and the runner passes them so."""
    it = iter(argv)
    for arg in it:
        flag, inline = table.get(arg), None
        if flag is None and "=" in arg:
            name, _, inline = arg.partition("=")
            flag = table.get(name) if name in SIM_ONLY else None
        if flag is None:
            other(arg)
            continue
        if flag.parse is None:
            if inline is not None:
                raise ParseError(f"{flag.name} takes no value")
            opts[flag.dest] = flag.const
            continue
        raw = next(it, None) if inline is None else inline
        if raw is None:
            raise ParseError(missing(flag))
        try:
            value = flag.parse(raw)
        except ValueError as exc:
            raise ParseError(str(exc) or flag.error or f"{flag.name}: invalid value {raw!r}") from None
        if flag.repeat:
            opts.setdefault(flag.dest, []).append(value)
        else:
            opts[flag.dest] = value
    return opts


def fail(message: str, help_text: str) -> NoReturn:
    """The real binaries' reaction to a parse error: the line on stderr, help on stdout, exit 1."""
    print(message, file=sys.stderr, flush=True)
    print(help_text, flush=True)
    sys.exit(PARSE_EXIT)


# --- value parsers (messages are the real node's where it has one) ---

def integer(low: int, high: int = 2**64 - 1, message: str = "") -> Callable[[str], int]:
    """Rust's ``str::parse::<uN>`` plus a range filter: digits only (a leading + is allowed)."""
    def parse(raw: str) -> int:
        text = raw[1:] if raw.startswith("+") else raw
        if not text.isdigit() or not text.isascii():
            raise ValueError(message)
        value = int(text)
        if not low <= value <= high:
            raise ValueError(message)
        return value
    return parse


def signed(message: str) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        text = raw[1:] if raw[:1] in "+-" else raw
        if not text.isdigit() or not text.isascii():
            raise ValueError(message)
        return int(raw)
    return parse


def socket_addr(flag: str) -> Callable[[str], tuple[str, int]]:
    """Rust's ``SocketAddr`` parse: an IP literal (IPv6 in brackets) and a port 0..65535."""
    def parse(raw: str) -> tuple[str, int]:
        bad = ValueError(f"{flag} requires a valid <addr:port>, got: {raw}")
        host, sep, port = raw.rpartition(":")
        if not sep or not port.isdigit() or not port.isascii() or int(port) > 65535:
            raise bad
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise bad from None
        else:
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise bad from None
        return host, int(port)
    return parse


def non_empty(message: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not raw.strip():
            raise ValueError(message)
        return raw.strip()
    return parse


def verbatim(raw: str) -> str:
    return raw


# --- the simulator's own switches (both generations) ---

def _fault_number(kind: type, flag: str) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{flag}: expected a number, got {raw!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{flag}: must be a finite number, got {raw!r}")
        if value < 0:
            raise ValueError(f"{flag}: must not be negative, got {raw!r}")
        return value
    return parse


def _ratio(raw: str) -> float:
    value = _fault_number(float, "--fault-distfs-fail-ratio")(raw)
    if not 0 <= value <= 1:
        raise ValueError(f"--fault-distfs-fail-ratio: must be within 0..1, got {value}")
    return value


def _reason(raw: str) -> str:
    if raw not in DISTFS_REASONS:
        raise ValueError(f"--fault-distfs-fail-reason: must be one of {', '.join(DISTFS_REASONS)}, got {raw!r}")
    return raw


def _exit_code(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 255:
        raise ValueError(f"--fault-crash-code: must be an exit code 1..255, got {raw!r}")
    return value


def _seed(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"--seed: expected an integer, got {raw!r}") from None


def _f(name: str, parse: Callable[[str], Any] | None = None) -> Flag:
    return Flag(name, name.lstrip("-").replace("-", "_"), parse)


SIM_FLAGS: tuple[Flag, ...] = (
    _f("--seed", _seed),
    _f("--fault-leak-bytes-per-sec", _fault_number(int, "--fault-leak-bytes-per-sec")),
    _f("--fault-fd-leak-per-sec", _fault_number(float, "--fault-fd-leak-per-sec")),
    _f("--fault-disk-bytes-per-sec", _fault_number(int, "--fault-disk-bytes-per-sec")),
    *(_f(f"--fault-{n}-at-sec", _fault_number(float, f"--fault-{n}-at-sec"))
      for n in ("stall", "regress", "fork", "invariant", "crash", "last-error", "replication-down",
                "state-root-diverge")),
    _f("--fault-regress-by", _fault_number(int, "--fault-regress-by")),
    _f("--fault-distfs-fail-ratio", _ratio),
    _f("--fault-distfs-fail-reason", _reason),
    _f("--fault-crash-code", _exit_code),
    _f("--fault-partial-report"),
    _f("--fault-slow-write-ms", _fault_number(int, "--fault-slow-write-ms")),
    _f("--fault-finality-delay-ms", _fault_number(int, "--fault-finality-delay-ms")),
)

SIM_ONLY = frozenset({f.name for f in SIM_FLAGS} | {"--status-listen"})

SIM_DEFAULTS: dict[str, Any] = {
    "seed": 0, "fault_leak_bytes_per_sec": 0, "fault_fd_leak_per_sec": 0.0, "fault_disk_bytes_per_sec": 0,
    **{f"fault_{n}_at_sec": None for n in ("stall", "regress", "fork", "invariant", "crash", "last_error",
                                            "replication_down", "state_root_diverge")},
    "fault_regress_by": 100, "fault_distfs_fail_ratio": 0.0, "fault_distfs_fail_reason": "MISSING_SAMPLE",
    "fault_crash_code": 3, "fault_partial_report": False, "fault_slow_write_ms": 0, "fault_finality_delay_ms": 0,
}

SIM_HELP = """Simulator-only switches (times are seconds since this process started):
  --seed <n>                         blob contents and DistFS failure draws (default 0)
  --fault-leak-bytes-per-sec <n>     allocate and touch n bytes/s, never freed
  --fault-fd-leak-per-sec <n>        open n fds/s on /dev/null, never closed
  --fault-disk-bytes-per-sec <n>     append n bytes/s to output/leaked-disk.bin
  --fault-stall-at-sec <s>           from s no block is proposed or committed
  --fault-regress-at-sec <s>         at s the committed height drops by --fault-regress-by (100), once
  --fault-fork-at-sec <s>            from s this node's block hashes differ from its peers'
  --fault-invariant-at-sec <s>       from s the reward asset invariant fails
  --fault-last-error-at-sec <s>      from s the runtime reports a last_error (critical alert in G2)
  --fault-replication-down-at-sec <s> from s the node's replication is down: listener closed, no dials
  --fault-state-root-diverge-at-sec <s> from s the executor re-runs its last block, a new state root each time
  --fault-finality-delay-ms <ms>     the sequencer holds each proposal ms before committing it
  --fault-distfs-fail-ratio <r>      each storage challenge fails with probability r
  --fault-distfs-fail-reason <R>     MISSING_SAMPLE (default), HASH_MISMATCH, TIMEOUT, READ_IO_ERROR, ...
  --fault-crash-at-sec <s>           at s exit at once with --fault-crash-code (3)
  --fault-partial-report             write each report in two halves with a 300 ms pause
  --fault-slow-write-ms <ms>         the same two-halves write with an ms pause"""


# --- DistFS probe flags: the same in both generations (G2.md section 1, "DistFS probe flags") ---

def positive(flag: str, high: int = 2**64 - 1) -> Flag:
    msg = f"{flag} requires a positive integer"
    return Flag(flag, flag.lstrip("-").replace("-", "_"), integer(1, high, msg), error=msg)


def non_negative(flag: str, high: int = 2**64 - 1) -> Flag:
    msg = f"{flag} requires a non-negative integer"
    return Flag(flag, flag.lstrip("-").replace("-", "_"), integer(0, high, msg), error=msg)


DISTFS_FLAGS: tuple[Flag, ...] = (
    positive("--reward-distfs-probe-per-tick", 2**32 - 1),
    positive("--reward-distfs-probe-max-sample-bytes", 2**32 - 1),
    positive("--reward-distfs-probe-ttl-ms"),
    non_negative("--reward-distfs-probe-allowed-clock-skew-ms"),
    positive("--reward-distfs-adaptive-max-checks-per-round", 2**32 - 1),
    non_negative("--reward-distfs-adaptive-backoff-base-ms"),
    non_negative("--reward-distfs-adaptive-backoff-max-ms"),
    *(positive(f"--reward-distfs-adaptive-multiplier-{r}", 2**32 - 1)
      for r in ("hash-mismatch", "missing-sample", "timeout", "read-io-error", "signature-invalid", "unknown")),
)
DISTFS_DEFAULTS: dict[str, Any] = {"reward_distfs_probe_per_tick": 1, "reward_distfs_adaptive_backoff_base_ms": 0,
                                   "reward_distfs_adaptive_backoff_max_ms": 0}


def check_distfs(o: dict[str, Any]) -> None:
    if o["reward_distfs_adaptive_backoff_max_ms"] < o["reward_distfs_adaptive_backoff_base_ms"]:
        raise ParseError("--reward-distfs-adaptive-backoff-max-ms must be >= --reward-distfs-adaptive-backoff-base-ms")


def table(*groups: tuple[Flag, ...]) -> dict[str, Flag]:
    return {f.name: f for group in groups for f in group}
