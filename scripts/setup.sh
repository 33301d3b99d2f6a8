#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine (run as root): Prometheus, Alertmanager and
# nftables, faketime from Debian's packages when missing, then this package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v nft >/dev/null || need+=(nftables)
command -v faketime >/dev/null || need+=(faketime)   # libfaketime: the clock_skew chaos action
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} from Debian's packages" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'
