"""The forgotten-password form's per-client limit counts an IPv6 client by its /64, as the login does: one host
usually has the whole /64, so counting each address let it send reset emails (to any staff inbox) without limit
by moving through its own addresses."""

from __future__ import annotations

import datetime as dt

import time_machine
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import Job
from core.runtime import Runtime
from tests.staff.conftest import csrf_of


def queued_resets(runtime: Runtime) -> int:
    with runtime.read_session() as session:
        return len(session.exec(select(Job).where(Job.actor_name == "core.request_password_reset")).all())


def ask_from(runtime: Runtime, address: str, email: str) -> None:
    from giving.app import create_app

    app = create_app(runtime=runtime, start_inline_worker=False)
    with TestClient(app, client=(address, 50000)) as client:
        token = csrf_of(client.get("/staff/forgot-password").text)
        answer = client.post("/staff/forgot-password", data={"csrf_token": token, "email": email})
        assert answer.status_code == 200, answer.text


def test_one_ipv6_network_shares_the_per_client_limit(runtime: Runtime) -> None:
    limit = runtime.settings.web.login_rate_per_minute
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        for n in range(limit + 3):
            # A new address of the same /64 and a new inbox each time (the per-address limit is not the one tested).
            ask_from(runtime, f"2001:db8:1:2::{n + 1:x}", f"someone{n}@example.org")
        assert queued_resets(runtime) == limit
        # Another network is a client of its own.
        ask_from(runtime, "2001:db8:1:3::1", "another@example.org")
        assert queued_resets(runtime) == limit + 1
