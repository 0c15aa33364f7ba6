"""Answers for the fake provider server: Stripe balance transactions of a payout and GoCardless payouts with their
items, paginated the way the real APIs paginate (so the SDKs' own paging runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fakes.provider_server import FakeProvider, RecordedRequest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
FIXTURES = SHARED / "fixtures"


def fixture(relative: str) -> Any:
    return json.loads((FIXTURES / relative).read_text())


def serve_balance_transactions(server: FakeProvider, payouts: dict[str, list[dict[str, Any]]]) -> None:
    """`GET /v1/balance_transactions?payout=po_...`: pages of `limit`, following `starting_after`."""

    def answer(request: RecordedRequest) -> tuple[int, Any]:
        payout = request.param("payout")
        if payout not in payouts:
            return 404, {"error": {"type": "invalid_request_error", "message": f"No such payout: {payout}"}}
        rows = payouts[payout]
        limit = int(request.param("limit") or 10)
        after = request.param("starting_after")
        start = 0
        if after:
            start = next(i for i, row in enumerate(rows) if row["id"] == after) + 1
        page = rows[start : start + limit]
        return 200, {
            "object": "list",
            "url": "/v1/balance_transactions",
            "has_more": start + limit < len(rows),
            "data": page,
        }

    server.route("GET", r"/v1/balance_transactions", answer)


def serve_gocardless_payout(
    server: FakeProvider, payout: dict[str, Any], items: list[dict[str, Any]], page_size: int = 50
) -> None:
    """`GET /payouts/PO...` and `GET /payout_items?payout=PO...` with cursor pages."""
    server.route("GET", rf"/payouts/{payout['id']}", {"payouts": payout})

    def answer(request: RecordedRequest) -> tuple[int, Any]:
        if request.param("payout") != payout["id"]:
            return 200, {"payout_items": [], "meta": {"cursors": {"before": None, "after": None}, "limit": page_size}}
        start = int(request.param("after") or 0)
        page = items[start : start + page_size]
        after = str(start + page_size) if start + page_size < len(items) else None
        return 200, {"payout_items": page, "meta": {"cursors": {"before": None, "after": after}, "limit": page_size}}

    server.route("GET", r"/payout_items", answer)


def balance_transaction(
    txn_id: str,
    amount: int,
    fee: int,
    source: Any,
    *,
    category: str = "charge",
    bt_type: str | None = None,
) -> dict[str, Any]:
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "amount": amount,
        "fee": fee,
        "net": amount - fee,
        "currency": "gbp",
        "reporting_category": category,
        "type": bt_type or category,
        "source": source,
        "status": "available",
        "available_on": 1767225600,
        "created": 1767225600,
        "description": None,
        "fee_details": [],
    }


def money_settings(database_url: str, tmp_path: Path, stripe: FakeProvider, gocardless: FakeProvider, **sections: Any):
    """Settings whose SDKs talk to the fake provider servers."""
    from tests.fixtures.app import make_settings

    return make_settings(
        database_url,
        tmp_path,
        stripe={"api_base": stripe.url},
        gocardless={"base_url": gocardless.url},
        **sections,
    )


def run_giving(args: list[str], settings: Any, monkeypatch: Any, tmp_path: Path, stdin: str | None = None) -> Any:
    """Run a `giving` command in-process (typer's runner) against the test's database and providers; the test's
    runtime is put back afterwards."""
    from typer.testing import CliRunner

    from core.runtime import get_runtime, set_runtime
    from core.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIVING_ENV", "test")
    monkeypatch.setenv("GIVING_DATABASE__URL", settings.database.url)
    monkeypatch.setenv("GIVING_STRIPE__SECRET_KEY", settings.stripe.secret_key.get_secret_value())
    monkeypatch.setenv("GIVING_STRIPE__WEBHOOK_SECRET", settings.stripe.webhook_secret.get_secret_value())
    monkeypatch.setenv("GIVING_STRIPE__API_BASE", settings.stripe.api_base)
    monkeypatch.setenv("GIVING_GOCARDLESS__ACCESS_TOKEN", settings.gocardless.access_token.get_secret_value())
    monkeypatch.setenv("GIVING_GOCARDLESS__WEBHOOK_SECRET", settings.gocardless.webhook_secret.get_secret_value())
    monkeypatch.setenv("GIVING_GOCARDLESS__BASE_URL", settings.gocardless.base_url)
    for section, values in (("shop", settings.shop),):
        for key, value in values.model_dump().items():
            monkeypatch.setenv(f"GIVING_{section.upper()}__{key.upper()}", str(value))
    get_settings.cache_clear()
    previous = get_runtime()
    try:
        from giving.cli import app

        return CliRunner().invoke(app, args, input=stdin, catch_exceptions=False)
    finally:
        set_runtime(previous)
        get_settings.cache_clear()
