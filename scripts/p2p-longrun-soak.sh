#!/usr/bin/env bash
# Drop-in for the old soak script: same flags, same exit codes (0 ok, 1 failed, 2 bad arguments).
# Like the old script it runs from the repo root, so relative paths (the default out-dir
# .tmp/p2p_longrun, --chaos-plan examples/...) are relative to the repo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python3 -m runner "$@"
