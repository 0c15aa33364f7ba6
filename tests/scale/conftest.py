"""Fixtures of the scale and fault tests: a database and a RabbitMQ vhost of the test's own, and a `system` that
starts real `giving serve` / `giving worker` processes over them and stops them whatever happens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.services import REQUIRE_SERVICES, need
from tests.scale.harness import (
    PostgresDatabase,
    RabbitVhost,
    System,
    TcpProxy,
    new_system,
    rabbitmqctl_available,
    system_env,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One xdist worker takes them all, one after another: they time real processes on a shared machine.
    for item in items:
        if "tests/scale/" in str(item.fspath):
            item.add_marker(pytest.mark.xdist_group("scale"))
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def scale_template() -> Iterator[str]:
    """A database built by the migrations once per test run, which each test's database is copied from."""
    need("PostgreSQL", "127.0.0.1", 5432)
    template = PostgresDatabase("template").create()
    template.admin.dispose()
    try:
        yield template.name
    finally:
        template.drop()


@pytest.fixture
def scale_db(request: pytest.FixtureRequest, scale_template: str) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase("t", template=scale_template).create()
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture
def vhost(rabbitmq_url: str) -> Iterator[RabbitVhost]:
    if not rabbitmqctl_available():
        message = "rabbitmqctl cannot reach the local RabbitMQ (needed for a vhost per test run)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    created = RabbitVhost(rabbitmq_url, "scale").create()
    try:
        yield created
    finally:
        created.delete()


@pytest.fixture
def proxies() -> Iterator[Callable[[int], TcpProxy]]:
    started: list[TcpProxy] = []

    def make(target_port: int) -> TcpProxy:
        proxy = TcpProxy(target_port).start()
        started.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in started:
            proxy.stop()


SystemFactory = Callable[..., System]


@pytest.fixture
def system(
    tmp_path: Path, scale_db: PostgresDatabase, vhost: RabbitVhost, proxies: Callable[[int], TcpProxy]
) -> Iterator[SystemFactory]:
    """`system(database_url=..., broker_url=..., **options)` → a System (by default on this test's database and
    vhost) whose processes stop at the end of the test, before the database, vhost and proxies go. Their logs are
    printed at teardown, so pytest shows them with a failure."""
    systems: list[System] = []

    def make(*, database_url: str | None = None, broker_url: str | None = None, **options: object) -> System:
        env = system_env(
            database_url=database_url or scale_db.url,
            broker_url=broker_url or vhost.url(),
            workdir=tmp_path,
            **options,  # type: ignore[arg-type]
        )
        created = new_system(tmp_path, env)
        systems.append(created)
        return created

    try:
        yield make
    finally:
        for created in reversed(systems):
            created.stop_all()
            print(created.logs()[-30000:])
