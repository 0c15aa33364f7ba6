"""The Stripe seam's HTTP transport (payments.providers.stripe.Urllib3Client): the proxy the environment names, and
a provider that cannot be reached."""

from __future__ import annotations

import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import SecretStr

from core.settings import StripeSettings
from payments.errors import ProviderUnavailable
from payments.providers.stripe import StripeGateway
from tests.fakes.provider_server import FakeProvider

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def _clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARIABLES, "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("variable", ["http_proxy", "all_proxy"])
@pytest.mark.parametrize("with_scheme", [True, False])
def test_calls_go_through_the_proxy_the_environment_names(
    fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, variable: str, with_scheme: bool
) -> None:
    """As requests reads the environment: the scheme's proxy or `all_proxy`, `http://` when no scheme is written."""
    fake_stripe.route(
        "GET",
        r"/v1/payment_intents/pi_proxied",
        {
            "id": "pi_proxied",
            "object": "payment_intent",
            "latest_charge": {"id": "ch_proxied", "object": "charge", "created": 1_764_000_000},
        },
    )
    _clear_proxies(monkeypatch)
    monkeypatch.setenv(variable, fake_stripe.url if with_scheme else fake_stripe.url.removeprefix("http://"))
    # Not a host anyone resolves: only the proxy can answer for it. (A key per case: the SDK client is cached.)
    key = f"sk_test_proxied_{variable}_{with_scheme}"
    gateway = StripeGateway(StripeSettings(secret_key=SecretStr(key), api_base="http://stripe.invalid"))

    intent = gateway.retrieve_payment_intent_with_charge("pi_proxied")

    assert intent["latest_charge"]["id"] == "ch_proxied"
    [request] = fake_stripe.requests_to("GET", r"/v1/payment_intents/pi_proxied")
    assert request.headers["host"] == "stripe.invalid"
    assert request.headers["authorization"] == f"Bearer {key}"
    assert request.query["expand[0]"] == ["latest_charge"]


def test_a_host_the_environment_exempts_is_reached_directly(
    fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_stripe.route("GET", r"/v1/charges/ch_direct", {"id": "ch_direct", "object": "charge"})
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # the discard port: a proxy that never answers
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    gateway = StripeGateway(StripeSettings(secret_key=SecretStr("sk_test_direct"), api_base=fake_stripe.url))

    assert gateway.retrieve_charge("ch_direct")["id"] == "ch_direct"


def test_a_dropped_connection_is_tried_again_then_provider_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts and hangs up at once: the SDK tries twice more (max_network_retries), then the
    gateway says Stripe is unavailable."""
    _clear_proxies(monkeypatch)
    accepted = []
    server = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            accepted.append(connection)
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    port = server.getsockname()[1]
    gateway = StripeGateway(
        StripeSettings(secret_key=SecretStr("sk_test_dropped"), api_base=f"http://127.0.0.1:{port}")
    )
    try:
        with pytest.raises(ProviderUnavailable, match="could not reach Stripe"):
            gateway.retrieve_payment_intent("pi_nowhere")
    finally:
        server.close()

    assert len(accepted) == 3


def test_a_refused_connection_is_provider_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    gateway = StripeGateway(
        StripeSettings(secret_key=SecretStr("sk_test_refused"), api_base=f"http://127.0.0.1:{closed_port}")
    )

    with pytest.raises(ProviderUnavailable, match="could not reach Stripe"):
        gateway.retrieve_payment_intent("pi_nowhere")


def test_concurrent_calls_keep_their_connections(
    fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's threads call Stripe at once: each connection goes back to the pool, none is thrown away."""
    fake_stripe.route("GET", r"/v1/charges/ch_(\w+)", lambda request: (200, {"id": request.path.rsplit("/", 1)[1]}))
    _clear_proxies(monkeypatch)
    gateway = StripeGateway(StripeSettings(secret_key=SecretStr("sk_test_pooled"), api_base=fake_stripe.url))
    caplog.set_level(logging.WARNING, logger="urllib3")

    def calls(thread: int) -> list[str]:
        return [gateway.retrieve_charge(f"ch_{thread}x{n}")["id"] for n in range(10)]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(calls, range(4)))

    assert answers == [[f"ch_{thread}x{n}" for n in range(10)] for thread in range(4)]
    assert not [record for record in caplog.records if "pool is full" in record.getMessage()]
