#!/usr/bin/env bash
# Drop-in for the old soak script: same flags, same exit codes (0 ok, 1 failed, 2 bad arguments).
# Paths in flags stay relative to the caller's directory.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m runner "$@"
