"""Corrections when a refund changes after its correction was issued: re-allocated between a basket's goods and its
donation line, or moved by Stripe from succeeded to failed. Driven as production is: signed Stripe events posted to
the real endpoint (the fake Stripe answers the SDK), the in-process worker running the webhook and receipts jobs,
and the PDFs read back. An issued correction is never edited: a further one states the right figures."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import InlineWorker, Runtime
from core.settings import Settings
from crm.models import HistoryEntry, StatementPreference
from payments import service as payments_service
from payments.models import Order, Refund
from receipts.models import Document, DocumentKind
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_checkout, seed_order, unique
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.conftest import receipts_settings
from tests.receipts.helpers import documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text
from tests.webhooks.support import deliver, install, stuck_events


@pytest.fixture
def settings(
    database_url: str,
    tmp_path: Path,
    smtp_server: tuple[Mailbox, int],
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> Settings:
    return receipts_settings(
        database_url,
        tmp_path,
        smtp_server[1],
        stripe={"api_base": fake_stripe.url},
        gocardless={"base_url": fake_gocardless.url},
    )


@pytest.fixture
def app(runtime: Runtime, worker: InlineWorker) -> Iterator[TestClient]:
    from giving.app import create_app

    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    with TestClient(create_app(runtime=runtime, start_inline_worker=False)) as client:
        yield client


class Card:
    """One card payment (a one-off gift or a basket) and Stripe's side of it, posted as signed events."""

    def __init__(
        self,
        runtime: Runtime,
        client: TestClient,
        worker: InlineWorker,
        fake_stripe: FakeProvider,
        fake_gocardless: FakeProvider,
    ):
        self.runtime, self.client, self.worker = runtime, client, worker
        self.fake_stripe, self.fake_gocardless = fake_stripe, fake_gocardless
        self.scenario = Scenario(runtime)
        self.refunded = 0

    def pay(self, checkout_id: uuid.UUID, amount: int, **values: Any) -> None:
        self.total = amount
        self.intent_id, self.charge_id = self.scenario._intent(amount, created=self.scenario.tick())
        self.scenario._stripe(
            "checkout.session.completed",
            self.scenario._session_object(
                checkout_id,
                id=unique("cs_test_"),
                mode="payment",
                payment_status="paid",
                payment_intent=self.intent_id,
                amount_total=amount,
                amount_subtotal=amount,
                **values,
            ),
        )
        self.deliver()

    def refund(self, amount: int, *, status: str = "succeeded") -> dict[str, Any]:
        refund = self.scenario._refund(self.charge_id, self.intent_id, amount, status=status)
        if status == "succeeded":
            self.refunded += amount
        self.scenario._stripe(
            "charge.refunded", self.scenario._charge(self.charge_id, self.intent_id, self.total, self.refunded)
        )
        return refund

    def becomes(self, refund: dict[str, Any], status: str) -> None:
        """Stripe moves a refund on (pending → succeeded, or succeeded → failed: the money came back to us)."""
        if refund["status"] == "succeeded":
            self.refunded -= refund["amount"]
        refund["status"] = status
        if status == "succeeded":
            self.refunded += refund["amount"]
        self.scenario._stripe("refund.failed" if status == "failed" else "refund.updated", copy.deepcopy(refund))

    def deliver(self) -> None:
        install(self.scenario, self.fake_stripe, self.fake_gocardless)
        deliver(self.client, self.scenario.deliveries)
        self.scenario.deliveries.clear()
        for _ in range(3):  # webhook jobs enqueue receipts jobs, which enqueue emails
            self.worker.join()
        assert stuck_events(self.runtime) == []


@pytest.fixture
def card(
    runtime: Runtime, app: TestClient, worker: InlineWorker, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
) -> Card:
    return Card(runtime, app, worker, fake_stripe, fake_gocardless)


def refund_row(runtime: Runtime, stripe_refund: dict[str, Any]) -> Refund:
    with runtime.read_session() as session:
        row = session.exec(select(Refund).where(Refund.stripe_refund_id == stripe_refund["id"])).one()
        session.expunge(row)
        return row


def corrections(runtime: Runtime) -> list[Document]:
    return documents(runtime, DocumentKind.CORRECTION)


def text_of(runtime: Runtime, document: Document) -> str:
    return pdf_text(stored_pdf(runtime, document))


def declared_supporter(runtime: Runtime, **kwargs: Any) -> uuid.UUID:
    supporter = factories.supporter(runtime, **kwargs)
    factories.declaration(runtime, supporter)
    return supporter


def basket(runtime: Runtime, card: Card, supporter: uuid.UUID, donation: int) -> tuple[uuid.UUID, int]:
    order_id, goods = seed_order(runtime, supporter, sku="TEE-SOLIDARITY-M", quantity=1, donation=donation)
    checkout = seed_checkout(runtime, supporter, amount=goods + donation, order_id=order_id)
    card.pay(checkout, goods + donation, submit_type="pay")
    return order_id, goods


def pounds(pence: int) -> str:
    return f"£{pence // 100:,}.{pence % 100:02d}"


# --- a correction whose refund was re-allocated --------------------------------------------------------------------


def test_a_refund_moved_from_the_goods_to_the_donation_replaces_the_sale_correction(
    runtime: Runtime, card: Card, mailbox: Mailbox
) -> None:
    """A newer £5 refund succeeds while an older one for the shirt is pending: the £5 comes off the goods and the
    sale receipt is corrected (CR-000001: goods refunded £5). The older one then succeeds: oldest first, it takes
    the goods and the £5 moves to the donation. CR-000001 now says money came off the goods that did not: a further
    correction replaces its figures (none of the £5 from the goods; the goods refunded in all by the shirt's
    refund), and the donation's receipt gets its own correction."""
    supporter = declared_supporter(runtime)
    _, goods = basket(runtime, card, supporter, donation=500)
    older = card.refund(goods, status="pending")
    newer = card.refund(500)
    card.deliver()
    [sale_fix] = corrections(runtime)
    assert "Refunded on" in text_of(runtime, sale_fix) and f"Corrected amount {pounds(goods - 500)}" in text_of(
        runtime, sale_fix
    )

    card.becomes(older, "succeeded")
    card.deliver()
    newer_id = refund_row(runtime, newer).id
    by_reference = {d.reference: d for d in corrections(runtime)}
    revisions = [d for d in by_reference.values() if d.content.get("replaces_reference") == "CR-000001"]
    assert len(revisions) == 1, {r: d.content for r, d in by_reference.items()}
    [revision] = revisions
    assert revision.refund_id == newer_id and revision.corrects_id == sale_fix.id
    text = text_of(runtime, revision)
    for expected in (
        "CORRECTION: this replaces correction CR-000001",
        "which corrected sale receipt SR-000001",
        "£0.00 of it came off your purchase, not £5.00 as CR-000001 said",
        f"Returned in all {pounds(goods)}",
        "Corrected amount £0.00",
    ):
        assert expected in text, (expected, text)
    assert "Gift Aid" not in text
    # The donation line's own correction: the £5 came off the donation.
    [donation_fix] = [d for d in by_reference.values() if d.content["corrects_kind"] == "gift_receipt"]
    assert "Corrected amount £0.00" in text_of(runtime, donation_fix)

    # The same events again change nothing: no further document.
    count = len(documents(runtime))
    card.scenario._stripe("refund.updated", copy.deepcopy(older))
    card.deliver()
    run_job(runtime, card.worker, "receipts.issue_correction", refund_id=newer_id)
    assert len(documents(runtime)) == count


# --- a refund that failed after its correction ---------------------------------------------------------------------


def test_a_refund_that_failed_after_its_correction_gets_a_correction_making_the_gift_whole(
    runtime: Runtime, card: Card, mailbox: Mailbox
) -> None:
    """£100 Gift Aided, £40 refunded: CR-000001 says £60 and £15 Gift Aid. Stripe then moves the refund to failed
    (the money came back to us): a further correction says the gift is £100 again and the Gift Aid £25."""
    supporter = declared_supporter(runtime)
    card.pay(seed_checkout(runtime, supporter, amount=10000), 10000)
    refund = card.refund(4000)
    card.deliver()
    [first] = corrections(runtime)
    assert "Corrected amount £60.00" in text_of(runtime, first)

    card.becomes(refund, "failed")
    card.deliver()
    refund_id = refund_row(runtime, refund).id
    with runtime.read_session() as session:
        [item] = session.exec(select(HistoryEntry).where(HistoryEntry.type == "refund")).all()
    assert (
        item.summary == "Refund of £40.00 (requested by customer) failed: the money came back"
        and item.data["status"] == "failed"
    )
    first_again, revision = corrections(runtime)
    assert first_again.content == first.content  # the issued one is never edited
    assert (revision.reference, revision.refund_id, revision.corrects_id) == ("CR-000002", refund_id, first.id)
    text = text_of(runtime, revision)
    for expected in (
        "CORRECTION: this replaces correction CR-000001",
        "which corrected receipt GR-000001",
        "The refund of £40.00 we made on",
        "did not reach you",
        "Returned in all £0.00",
        "Corrected amount £100.00",
        "we will now claim £25.00 Gift Aid on the corrected amount",
    ):
        assert expected in text, (expected, text)
    assert "ada@example.org" in {m["To"] for m in mailbox.messages}
    assert mailbox.messages[-1]["Subject"] == "Corrected receipt CR-000002 from Calais Refugee Aid"
    body = mailbox.messages[-1].get_body(("plain",))
    assert body is not None and (
        "Our CR-000001 showed a refund of £40.00 that did not reach you: it failed, so that money is still your "
        "gift. The attached corrected receipt replaces it."
    ) in " ".join(body.get_content().split())

    # Run again (a duplicate job): nothing more.
    run_job(runtime, card.worker, "receipts.issue_correction", refund_id=refund_id)
    assert len(corrections(runtime)) == 2


def test_a_failed_basket_refund_moves_the_donation_refund_to_the_goods(
    runtime: Runtime, card: Card, mailbox: Mailbox
) -> None:
    """The shirt refunded (goods), then £5 (the donation: the goods are all returned). The shirt's refund fails: by
    the rule the £5 now comes off the goods. The donation's correction said £5 was returned from the donation:
    a further one says it was not (the donation is whole, its Gift Aid back), and the sale receipt is corrected for
    the £5 that did come off the goods."""
    supporter = declared_supporter(runtime)
    order_id, goods = basket(runtime, card, supporter, donation=500)
    shirt = card.refund(goods)
    card.deliver()
    card.refund(500)
    card.deliver()
    before = {d.content["corrects_kind"]: d for d in corrections(runtime)}
    assert set(before) == {"sale_receipt", "gift_receipt"}
    donation_text = text_of(runtime, before["gift_receipt"])
    assert "Corrected amount £0.00" in donation_text and "we will claim no Gift Aid" in donation_text

    card.becomes(shirt, "failed")
    card.deliver()
    with runtime.read_session() as session:
        order = session.get(Order, order_id)
        assert order is not None and order.refunded_amount == 500

    new = [d for d in corrections(runtime) if d.id not in {b.id for b in before.values()}]
    [donation_fix] = [d for d in new if d.content["corrects_kind"] == "gift_receipt"]
    text = text_of(runtime, donation_fix)
    for expected in (
        f"CORRECTION: this replaces correction {before['gift_receipt'].reference}",
        "£0.00 of it came off this gift, not £5.00",
        "Returned in all £0.00",
        "Corrected amount £5.00",
        "we will now claim £1.25 Gift Aid on the corrected amount",
    ):
        assert expected in text, (expected, text)
    sale_texts = [text_of(runtime, d) for d in new if d.content["corrects_kind"] == "sale_receipt"]
    assert len(sale_texts) == 2, sale_texts  # the £5 off the goods, and the shirt's refund that failed
    assert any("Refunded on" in t and f"Corrected amount {pounds(goods - 500)}" in t for t in sale_texts), sale_texts
    [failed] = [t for t in sale_texts if "did not reach you" in t]
    assert f"Returned in all £5.00 Corrected amount {pounds(goods - 500)}" in failed, failed


# --- while there ---------------------------------------------------------------------------------------------------


def test_a_refund_that_succeeded_and_failed_before_any_correction_gives_none(
    runtime: Runtime, card: Card, mailbox: Mailbox
) -> None:
    """A refund whose events arrive once Stripe already has it failed: no money moved, nothing to correct."""
    supporter = declared_supporter(runtime)
    card.pay(seed_checkout(runtime, supporter, amount=3000), 3000)
    refund = card.refund(1000)
    card.becomes(refund, "failed")
    card.deliver()
    run_job(runtime, card.worker, "receipts.issue_correction", refund_id=refund_row(runtime, refund).id)
    assert corrections(runtime) == []
    assert len(documents(runtime, DocumentKind.GIFT_RECEIPT)) == 1


def test_a_supporter_on_yearly_statements_gets_no_correction_when_a_refund_fails(
    runtime: Runtime, card: Card, mailbox: Mailbox
) -> None:
    """No receipt, so no correction either way: the statement shows what was kept."""
    supporter = declared_supporter(runtime, preference=StatementPreference.ANNUAL)
    card.pay(seed_checkout(runtime, supporter, amount=3000), 3000)
    refund = card.refund(1000)
    card.deliver()
    card.becomes(refund, "failed")
    card.deliver()
    run_job(runtime, card.worker, "receipts.issue_correction", refund_id=refund_row(runtime, refund).id)
    assert documents(runtime) == []


def test_a_regular_instalment_refunded_then_failed(runtime: Runtime, card: Card, mailbox: Mailbox) -> None:
    """A monthly card gift's instalment: its receipt, its correction, and the correction after the refund failed."""
    supporter = declared_supporter(runtime)
    scenario = card.scenario
    scenario.stripe_monthly(supporter, 2000, paid=1)
    card.deliver()
    [receipt] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    assert "Regular gift (monthly instalment)" in text_of(runtime, receipt)
    [invoice_payments] = scenario.stripe.invoice_payments.values()
    card.intent_id = invoice_payments[0]["payment"]["payment_intent"]
    card.charge_id = scenario.stripe.intents[card.intent_id]["latest_charge"]["id"]
    card.total = 2000
    refund = card.refund(2000)
    card.deliver()
    [first] = corrections(runtime)
    assert "Corrected amount £0.00" in text_of(runtime, first)
    card.becomes(refund, "failed")
    card.deliver()
    [_, revision] = corrections(runtime)
    text = text_of(runtime, revision)
    assert "Corrected amount £20.00" in text and "we will now claim £5.00 Gift Aid" in text, text


def test_a_receipt_made_after_a_refund_that_then_failed_is_corrected(
    runtime: Runtime, card: Card, mailbox: Mailbox
) -> None:
    """A receipt made after the gift was refunded in full shows £0 kept and no Gift Aid (the refund is among those
    it shows, so it gets no correction). The refund then fails: the receipt is wrong, and a correction says the gift
    is whole, with the Gift Aid its declaration covers. (The receipt comes late here because the supporter was on
    yearly statements when the gift and refund arrived and asked for receipts per gift afterwards.)"""
    from crm.models import Supporter

    supporter = declared_supporter(runtime, preference=StatementPreference.ANNUAL)
    card.pay(seed_checkout(runtime, supporter, amount=3000), 3000)
    refund = card.refund(3000)
    card.deliver()
    with runtime.unit_of_work() as uow:
        row = uow.session.get(Supporter, supporter)
        assert row is not None
        row.statement_preference = StatementPreference.PER_GIFT
        uow.session.add(row)
        gift_id = uow.session.exec(select(Refund.gift_id)).one()
    run_job(runtime, card.worker, "receipts.issue_for_gift", gift_id=gift_id)
    [receipt] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    receipt_text = text_of(runtime, receipt)
    assert "Your gift now £0.00" in receipt_text and "Gift Aid" not in receipt_text, receipt_text
    assert corrections(runtime) == []

    card.becomes(refund, "failed")
    card.deliver()
    [correction] = corrections(runtime)
    assert correction.corrects_id == receipt.id
    text = text_of(runtime, correction)
    for expected in (
        "CORRECTION: this replaces receipt GR-000001",
        "did not reach you",
        "Returned in all £0.00",
        "Corrected amount £30.00",
        "we will now claim £7.50 Gift Aid on the corrected amount",
    ):
        assert expected in text, (expected, text)
