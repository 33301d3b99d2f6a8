"""``python3 -m alerts [--out DIR] [--check] [--runbook-base-url URL]``: regenerate (or
verify) the generated rule file, Alertmanager config and runbook."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alerts.generate import DEFAULT_RUNBOOK_BASE_URL, HERE, check_base_url, stale, write
from soakcore.errors import UsageError, run_cli

EPILOG = f"""\
examples:
  python3 -m alerts                      regenerate alerts/ (commit the result)
  python3 -m alerts --check              exit 1 when a checked-in file is stale
  python3 -m alerts --runbook-base-url file://$PWD/alerts/RUNBOOK.md --out /tmp/rules
                                         rules whose runbook links open this checkout's RUNBOOK.md

The checked-in files use {DEFAULT_RUNBOOK_BASE_URL}
(alerts/generate.py REPOSITORY_WEB_URL), so they are the same on every machine.
exit codes: 0 done (or fresh), 1 stale (--check), 2 bad arguments."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m alerts", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into (default: alerts/)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a checked-in file differs from a fresh generation")
    parser.add_argument("--runbook-base-url", default=DEFAULT_RUNBOOK_BASE_URL, metavar="URL",
                        help="absolute URL of RUNBOOK.md that every alert's runbook_url starts with "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        raise UsageError(f"--out {args.out}: not a directory")
    try:
        base = check_base_url(args.runbook_base_url)
    except ValueError as exc:
        raise UsageError(f"--runbook-base-url {exc}") from None
    if args.out.resolve() == HERE and base != DEFAULT_RUNBOOK_BASE_URL and not args.check:
        raise UsageError("--runbook-base-url with another URL writes machine-specific links: give --out DIR "
                         "(the checked-in files keep the default), or change REPOSITORY_WEB_URL in "
                         "alerts/generate.py")
    if args.check:
        differing = stale(args.out, base)
        for name in differing:
            print(f"stale: {args.out / name} (run python3 -m alerts)", file=sys.stderr)
        return 1 if differing else 0
    for path in write(args.out, base):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli("alerts", main)
