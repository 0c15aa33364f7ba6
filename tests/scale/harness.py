"""Real processes for the scale and fault tests: `giving serve` and `giving worker` as subprocesses, a dedicated
PostgreSQL database and RabbitMQ vhost per test, and a TCP proxy to cut a process off from a service.

Isolation: queue names are fixed by the actor declarations, so concurrent test runs on one RabbitMQ each get a
vhost of their own (`rabbitmqctl add_vhost`); each test gets its own PostgreSQL database. The machine's shared
services are never stopped: an outage is a proxy we stop in front of them.

Clean-up: every process is started in a session of its own and stopped by its process group id (SIGTERM, then
SIGKILL), from a finaliser that runs even when the test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import sqlalchemy as sa

from core import migrate
from giving.cli import KEEP_ALIVE_SECONDS
from tests.fixtures.app import GOCARDLESS_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET
from tests.fixtures.services import POSTGRES_ADMIN_URL, RUN_ID

REPO = Path(__file__).resolve().parents[2]
# The installed console script, as an operator runs it.
GIVING = [str(Path(sys.executable).parent / "giving")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def web_client(**options: Any) -> httpx.Client:
    """A pooled client for `giving serve`. httpx keeps an idle connection 5 s, as long as uvicorn does: at that edge a
    request can go out on a connection the server has just closed and read a reset. Ours let go well before."""
    connections = options.pop("max_connections", None)
    limits = httpx.Limits(max_connections=connections, keepalive_expiry=KEEP_ALIVE_SECONDS / 2)
    return httpx.Client(limits=limits, **options)


def wait_until(condition: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


# --- services -----------------------------------------------------------------------------------------------------


class PostgresDatabase:
    """A database of its own on the machine's PostgreSQL, copied from a migrated template, dropped afterwards."""

    def __init__(self, label: str, *, template: str | None = None):
        self.name = f"giving_scale_{RUN_ID}_{label}_{uuid.uuid4().hex[:6]}"
        self.template = template
        self.admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.url = sa.make_url(POSTGRES_ADMIN_URL).set(database=self.name).render_as_string(hide_password=False)

    def create(self) -> PostgresDatabase:
        with self.admin.connect() as conn:
            if self.template:
                # A copy of a database the migrations built once: a second instead of several per test.
                conn.exec_driver_sql(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')
            else:
                conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        if not self.template:
            migrate.upgrade(self.url)
        return self

    def url_through(self, port: int) -> str:
        """The same database reached through a proxy on `port`."""
        return sa.make_url(self.url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)

    @property
    def port(self) -> int:
        return sa.make_url(self.url).port or 5432

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url.replace("postgresql://", "postgresql+psycopg://"), pool_size=2)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.dispose()


def rabbitmqctl_available() -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    result = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, timeout=30, check=False)
    return result.returncode == 0


class RabbitVhost:
    """A RabbitMQ vhost of its own, so this run's queues are never another run's."""

    def __init__(self, base_url: str, label: str):
        self.name = f"giving_{RUN_ID}_{label}_{uuid.uuid4().hex[:6]}"
        self.base = httpx.URL(base_url.replace("amqp://", "http://"))
        self.user = self.base.username or "guest"

    def create(self) -> RabbitVhost:
        _rabbitmqctl("add_vhost", self.name)
        _rabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")
        return self

    def url(self, port: int | None = None) -> str:
        password = self.base.password or "guest"
        return f"amqp://{self.user}:{password}@127.0.0.1:{port or self.base.port or 5672}/{quote(self.name, safe='')}"

    @property
    def port(self) -> int:
        return self.base.port or 5672

    def queue_depths(self) -> dict[str, int]:
        result = _rabbitmqctl("list_queues", "-p", self.name, "name", "messages", "--no-table-headers", quiet=True)
        depths = {}
        for line in result.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths

    def delete(self) -> None:
        with contextlib.suppress(Exception):
            _rabbitmqctl("delete_vhost", self.name)


def _rabbitmqctl(*args: str, quiet: bool = False) -> str:
    command = ["rabbitmqctl", *(["-q"] if quiet else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


class TcpProxy:
    """Forwards 127.0.0.1:port to a service. `stop()` refuses new connections and cuts the open ones, as a
    service that went away would; `start()` brings it back on the same port."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None):
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"proxy-{self.port}").start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                # RST rather than FIN: the client sees the connection die at once.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(source)


# --- processes ----------------------------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def children(self) -> list[int]:
        """Pids of the processes this one started (dramatiq's worker processes, uvicorn's web workers)."""
        result = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.popen.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in result.stdout.split()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the whole process group this process leads (it was started in its own session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)  # again if already sent: harmless
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Whatever is left of the group (a child that ignored SIGTERM) goes too.
        self.kill(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


@dataclass
class System:
    """A set of giving processes over one database and broker, with the environment they share."""

    workdir: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def _start(self, name: str, args: list[str], env: dict[str, str] | None, port: int | None) -> Process:
        log_path = self.workdir / f"{name}.log"
        log_file = log_path.open("ab")
        full_env = {**os.environ, **self.env, **(env or {})}
        popen = subprocess.Popen(
            [*GIVING, *args],
            cwd=self.workdir,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        process = Process(name, popen, log_path, port)
        self.processes.append(process)
        return process

    def serve(
        self, name: str = "web", *, env: dict[str, str] | None = None, workers: int = 1, wait: bool = True
    ) -> Process:
        port = free_port()
        process = self._start(name, ["serve", "--port", str(port), "--workers", str(workers)], env, port)
        if wait:
            self.wait_healthy(process)
        return process

    def serve_many(self, *names: str, env: dict[str, str] | None = None) -> list[Process]:
        """Several web processes, started together (each takes a few seconds to import the app)."""
        processes = [self.serve(name, env=env, wait=False) for name in names]
        for process in processes:
            self.wait_healthy(process)
        return processes

    def worker(
        self, name: str = "worker", *, processes: int = 1, threads: int = 4, env: dict[str, str] | None = None
    ) -> Process:
        return self._start(name, ["worker", "--processes", str(processes), "--threads", str(threads)], env, None)

    def wait_healthy(self, process: Process, timeout: float = 30) -> None:
        def healthy() -> bool:
            if not process.alive():
                raise AssertionError(f"{process.name} exited:\n{process.log()}")
            try:
                return httpx.get(process.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=timeout, what=f"{process.name} to answer /healthz")

    def stop_all(self) -> None:
        """SIGTERM to every process at once, then wait for each (SIGKILL for any still there after 10 s)."""
        for process in self.processes:
            if process.alive():
                process.kill(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in reversed(self.processes):
            process.stop(timeout=max(0.1, deadline - time.monotonic()))

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.log()}" for p in self.processes)


def system_env(
    *,
    database_url: str,
    broker_url: str,
    workdir: Path,
    stripe_api: str = "http://127.0.0.1:9",
    gocardless_api: str = "http://127.0.0.1:9",
    smtp_port: int = 9,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """What a deployment sets: the database, the broker, the secrets (from the environment only), local paths."""
    return {
        "GIVING_ENV": "test",
        "GIVING_SETTINGS": str(workdir / "settings.toml"),
        "GIVING_DATABASE__URL": database_url,
        "GIVING_DATABASE__POOL_SIZE": "5",
        "GIVING_DATABASE__MAX_OVERFLOW": "5",
        "GIVING_DATABASE__POOL_TIMEOUT": "5",
        "GIVING_BROKER__URL": broker_url,
        "GIVING_STRIPE__SECRET_KEY": "sk_test_giving",
        "GIVING_STRIPE__WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "GIVING_STRIPE__API_BASE": stripe_api,
        "GIVING_GOCARDLESS__ACCESS_TOKEN": "gc_test_token",
        "GIVING_GOCARDLESS__WEBHOOK_SECRET": GOCARDLESS_WEBHOOK_SECRET,
        "GIVING_GOCARDLESS__BASE_URL": gocardless_api,
        "GIVING_RECEIPTS__STORAGE_DIR": str(workdir / "receipts"),
        "GIVING_EMAIL__SMTP_HOST": "127.0.0.1",
        "GIVING_EMAIL__SMTP_PORT": str(smtp_port),
        "GIVING_WEB__BASE_URL": "http://127.0.0.1",
        "GIVING_METRICS_DIR": str(workdir / "metrics"),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


def new_system(workdir: Path, env: dict[str, str]) -> System:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "settings.toml").write_text("# the scale tests set everything through the environment\n")
    return System(workdir, env)


# --- deliveries ---------------------------------------------------------------------------------------------------


def stripe_signature(body: bytes, *, secret: str = STRIPE_WEBHOOK_SECRET, at: int | None = None) -> str:
    timestamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def gocardless_signature(body: bytes, *, secret: str = GOCARDLESS_WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def stripe_delivery(event: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return "/webhooks/stripe", body, {"Stripe-Signature": stripe_signature(body), "Content-Type": "application/json"}


def gocardless_delivery(events: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
    body = json.dumps({"events": events}).encode()
    return (
        "/webhooks/gocardless",
        body,
        {"Webhook-Signature": gocardless_signature(body), "Content-Type": "application/json"},
    )


def run_sweeps(database_url: str, broker_url: str) -> tuple[int, int]:
    """What the periodic sweeps do a minute or two after a message was lost, done now: send again every stored
    event not processed (webhooks.sweep_events) and every durable job still pending (core.resend_pending_jobs)."""
    import datetime as dt

    from core import jobs
    from core.clock import utc_now
    from core.runtime import build_runtime, set_runtime
    from core.settings import load_settings
    from giving.worker import import_tasks
    from webhooks import service as webhooks

    import_tasks()
    settings = load_settings(env="test", database={"url": database_url}, broker={"url": broker_url})
    runtime = build_runtime(settings)
    try:
        with runtime.unit_of_work() as uow:
            events = webhooks.sweep(uow, now=utc_now() + dt.timedelta(minutes=5))
        with runtime.unit_of_work() as uow:
            resent = jobs.resend_pending(uow, older_than=dt.timedelta(0))
        return events, resent
    finally:
        runtime.broker.close()
        runtime.engine.dispose()
        set_runtime(None)
