#!/usr/bin/env bash
# Build a lab of 3 simulated ISPs and a LAN in network namespaces, balance it
# with nmbalance, watch an uplink fail and come back, clean up.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python -m labkit.demo "$@"
