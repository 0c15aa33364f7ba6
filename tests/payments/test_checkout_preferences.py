"""A supporter created by a checkout starts with the installation's `[receipts] default_preference`."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from crm.models import StatementPreference, Supporter
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import DONOR, StripeCheckout, checkout_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url, tmp_path, fake_stripe.url, fake_gocardless.url, receipts={"default_preference": "annual"}
    )


def test_new_supporters_take_the_default_statement_preference(
    client: TestClient, runtime: Runtime, fake_stripe: FakeProvider
) -> None:
    StripeCheckout(fake_stripe)
    form = {**DONOR, "amount": "20", "frequency": "once", "method": "card"}
    response = client.post("/donate", data=form, follow_redirects=False, headers={"accept": "text/html"})
    assert response.status_code == 303
    with runtime.read_session() as session:
        [supporter] = session.exec(select(Supporter)).all()
        assert supporter.statement_preference == StatementPreference.ANNUAL
