#!/usr/bin/env bash
# Set up (if needed) and start the all-in-one platform: API server and controllers on the
# embedded SQLite store. Extra arguments go to `atoll up` (e.g. --port 6443 --data-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/atoll up "$@"
