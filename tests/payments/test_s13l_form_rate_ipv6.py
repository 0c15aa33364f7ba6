"""The donate and shop forms' per-client limit counts an IPv6 client by its /64, as the staff login does: one host
usually owns the whole /64, so counting each address apart let it send card-testing forms without limit by moving
through its own addresses. The evidence kept with a form still names the full address."""

from __future__ import annotations

import datetime as dt

import time_machine
from starlette.testclient import TestClient

from core.runtime import Runtime


def post_from(runtime: Runtime, address: str, path: str) -> int:
    from giving.app import create_app

    app = create_app(runtime=runtime, start_inline_worker=False)
    with TestClient(app, client=(address, 50000)) as client:
        # An empty form: refused (400) after it is counted, and nothing reaches a provider.
        return client.post(path, data={}).status_code


def test_one_ipv6_network_shares_the_checkout_forms_limit(runtime: Runtime) -> None:
    limit = runtime.settings.web.form_rate_per_minute
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        statuses = [
            # A new address of the same /64 each time, the donate and shop forms in turn (they share the counter).
            post_from(runtime, f"2001:db8:7:8::{n + 1:x}", "/donate" if n % 2 else "/shop/checkout")
            for n in range(limit + 2)
        ]
        assert statuses == [400] * limit + [429, 429]
        # Another /64 is a client of its own; an IPv4-mapped address counts as its IPv4 address.
        assert post_from(runtime, "2001:db8:7:9::1", "/donate") == 400
        for _ in range(limit):
            assert post_from(runtime, "203.0.113.9", "/donate") == 400
        assert post_from(runtime, "::ffff:203.0.113.9", "/donate") == 429
