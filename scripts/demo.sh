#!/usr/bin/env bash
# The main job on the embedded default: SQLite under ./var, no broker, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/giving demo "$@"
