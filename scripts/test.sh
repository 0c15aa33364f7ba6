#!/usr/bin/env bash
# The test command: static checks (ruff, mypy, import rules), then the whole suite.
# Tests that need PostgreSQL, Redis or RabbitMQ skip when they are down, unless GIVING_REQUIRE_SERVICES=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy .
.venv/bin/lint-imports
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
