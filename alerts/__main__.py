"""``python3 -m alerts [--out DIR] [--check]``: regenerate (or verify) the generated files."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alerts.generate import HERE, stale, write
from soakcore.errors import UsageError, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m alerts", description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into (default: alerts/)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a checked-in file differs from a fresh generation")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        raise UsageError(f"--out {args.out}: not a directory")
    if args.check:
        differing = stale(args.out)
        for name in differing:
            print(f"stale: {args.out / name} (run python3 -m alerts)", file=sys.stderr)
        return 1 if differing else 0
    for path in write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli("alerts", main)
