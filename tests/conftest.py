"""Test set-up: every database test runs on SQLite and on PostgreSQL, with the schema built by alembic.

GIVING_REQUIRE_SERVICES=1 (CI) turns a missing PostgreSQL, Redis or RabbitMQ into a failure instead of a skip.
"""

from __future__ import annotations

import os

os.environ["GIVING_ENV"] = "test"
_KEEP = {"GIVING_ENV", "GIVING_REQUIRE_SERVICES", "GIVING_TEST_POSTGRES", "GIVING_TEST_REDIS", "GIVING_TEST_RABBITMQ"}
for _name in list(os.environ):
    # The developer's own overrides must not leak into tests.
    if _name.startswith("GIVING_") and _name not in _KEEP:
        del os.environ[_name]

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.services",
    "tests.fixtures.app",
    "tests.fakes.provider_server",
    "tests.fixtures.smtp",
]
