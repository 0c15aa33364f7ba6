"""`/subscribe` and `/volunteer` count an IPv6 client by its /64, as the staff login does: one host usually owns
the whole /64, so counting each address apart let it send confirmation emails (to anyone's inbox) and volunteer
records without limit by moving through its own addresses. The evidence kept with a consent still names the full
address."""

from __future__ import annotations

import datetime as dt

import time_machine
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import Consent


def post_from(runtime: Runtime, address: str, path: str, email: str) -> int:
    from giving.app import create_app

    app = create_app(runtime=runtime, start_inline_worker=False)
    with TestClient(app, client=(address, 50000)) as client:
        return client.post(path, data={"email": email}).status_code


def test_one_ipv6_network_shares_the_subscribe_limit(runtime: Runtime) -> None:
    limit = runtime.settings.web.form_rate_per_minute
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        # A new address of the same /64 and a new inbox each time (the per-inbox limit is not the one tested).
        statuses = [
            post_from(runtime, f"2001:db8:5:6::{n + 1:x}", "/subscribe", f"p{n}@example.org") for n in range(limit + 2)
        ]
        assert statuses == [200] * limit + [429, 429]
        assert post_from(runtime, "2001:db8:5:7::1", "/subscribe", "other@example.org") == 200
    with runtime.read_session() as session:
        clients = {consent.evidence.get("client") for consent in session.exec(select(Consent)).all()}
    # The counter is per network; what is kept as evidence is the address itself.
    assert "2001:db8:5:6::1" in clients and "2001:db8:5:7::1" in clients


def test_one_ipv6_network_shares_the_volunteer_limit(runtime: Runtime) -> None:
    limit = runtime.settings.web.form_rate_per_minute
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        statuses = [
            post_from(runtime, f"2001:db8:5:6::{n + 1:x}", "/volunteer", f"v{n}@example.org") for n in range(limit + 2)
        ]
        assert statuses == [200] * limit + [429, 429]
        assert post_from(runtime, "2001:db8:5:7::1", "/volunteer", "other@example.org") == 200
