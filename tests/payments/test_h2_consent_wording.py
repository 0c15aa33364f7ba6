"""The donate and shop forms' email-updates tick box: the words the form shows are the words kept with the consent
the checkout records (read from the form's HTML, as the donor saw it), and the consent JSON shows them."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from crm.models import Consent, Wording
from crm.service import email_updates_wording, enduring_declaration_wording
from tests.crm.helpers import staff_token
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import StripeCheckout, checkout_settings, donate
from tests.payments.test_checkout_shop import buy, catalogue, stripe

__all__ = ["catalogue", "stripe"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url,
        tmp_path,
        fake_stripe.url,
        fake_gocardless.url,
        charity={"name": "Dover Refugee Aid & Friends"},  # an ampersand: the page escapes it, the record does not
        web={"form_rate_per_minute": 1000},
    )


def tick_box_words(page_html: str) -> str:
    """The label of the email-updates box, as the donor reads it."""
    found = re.search(r'<label for="email_updates">(.*?)</label>', page_html, re.DOTALL)
    assert found is not None
    return html.unescape(found.group(1)).strip()


def the_consent_and_its_words(runtime: Runtime) -> tuple[Consent, str]:
    with runtime.read_session() as session:
        consent = session.exec(select(Consent)).one()
        assert consent.wording_id is not None
        wording = session.get(Wording, consent.wording_id)
        assert wording is not None
        return consent, wording.text


def test_the_donate_form_keeps_the_words_its_tick_box_showed(
    runtime: Runtime, client: TestClient, stripe: StripeCheckout
) -> None:
    page = client.get("/donate")
    shown = tick_box_words(page.text)
    assert "Dover Refugee Aid & Friends" in shown and "unsubscribe" in shown
    assert donate(client, email_updates="yes", gift_aid="yes").status_code == 303
    consent, kept = the_consent_and_its_words(runtime)
    assert (consent.source, consent.status, kept) == ("donate_form", "granted", shown)
    # The declaration keeps its own words apart.
    with runtime.read_session() as session:
        texts = sorted(w.text for w in session.exec(select(Wording)).all())
    assert texts == sorted([shown, enduring_declaration_wording("Dover Refugee Aid & Friends")])
    staff = staff_token(runtime, "fundraiser")
    detail = client.get(f"/api/supporters/{consent.supporter_id}", headers=staff).json()
    assert detail["consents"]["email"]["wording_text"] == shown
    assert detail["consents"]["email"]["wording_version"] == consent.wording_version != ""


def test_a_box_ticked_only_when_the_form_is_sent_again_keeps_the_same_words(
    runtime: Runtime, client: TestClient, stripe: StripeCheckout
) -> None:
    shown = tick_box_words(client.get("/donate").text)
    ref = "6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    assert donate(client, checkout_ref=ref).status_code == 303
    assert donate(client, checkout_ref=ref, email_updates="yes").status_code == 303
    consent, kept = the_consent_and_its_words(runtime)
    assert (consent.source, kept) == ("donate_form", shown)


@pytest.mark.usefixtures("catalogue")
def test_the_shop_form_keeps_the_words_its_tick_box_showed(
    runtime: Runtime, client: TestClient, stripe: StripeCheckout
) -> None:
    shown = tick_box_words(client.get("/shop").text)
    assert shown == email_updates_wording("Dover Refugee Aid & Friends")
    assert buy(client, {"TEE-LMHR-M": "1"}, email_updates="yes").status_code == 303
    consent, kept = the_consent_and_its_words(runtime)
    assert (consent.source, consent.status, kept) == ("shop", "granted", shown)
