"""A gift receipt made after a basket refund shows that refund: whatever of it came off the donation line then. When
the refund is later re-allocated onto the donation, the receipt's figures are wrong, and a correction must say so
(found in review: the job took "shown on the receipt" to mean "already right" whenever some money now comes off the
gift, so no document ever told the donor, and the receipt still promised Gift Aid on money returned)."""

from __future__ import annotations

from sqlmodel import select

from core.runtime import Runtime
from crm.models import StatementPreference, Supporter
from payments.models import Gift, Order
from receipts.models import DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import test_correction_revisions as revisions
from tests.receipts.helpers import documents, run_job
from tests.receipts.test_correction_revisions import Card, basket, corrections, declared_supporter, refund_row, text_of

# The Stripe-driven fixtures of the correction revisions' tests: a basket paid and refunded through the real endpoint.
settings = revisions.settings
app = revisions.app
card = revisions.card


def _per_gift(runtime: Runtime, supporter: object) -> None:
    with runtime.unit_of_work() as uow:
        row = uow.session.get(Supporter, supporter)
        assert row is not None
        row.statement_preference = StatementPreference.PER_GIFT
        uow.session.add(row)


def test_a_refund_a_receipt_showed_on_the_goods_then_moved_to_the_donation_is_corrected(
    runtime: Runtime, card: Card, mailbox: Mailbox
) -> None:
    """A basket: a shirt and a £5 donation, Gift Aided. An older refund of the shirt's price is pending when a newer
    £5 refund succeeds: the £5 comes off the goods (goods first). The donation's receipt is made now (the supporter
    was on yearly statements and asked for receipts per gift): it lists the £5 refund among those it shows, with
    nothing returned from the gift, and Gift Aid of £1.25. The older refund then succeeds: oldest first, it takes
    the goods, and the £5 refund moves onto the donation. The receipt is now wrong (£5 kept, £1.25 Gift Aid): a
    correction replaces it (£5.00 returned, £0.00 kept, no Gift Aid)."""
    supporter = declared_supporter(runtime, preference=StatementPreference.ANNUAL)
    order_id, goods = basket(runtime, card, supporter, donation=500)
    older = card.refund(goods, status="pending")
    newer = card.refund(500)
    card.deliver()
    newer_id = refund_row(runtime, newer).id
    assert refund_row(runtime, newer).gift_amount == 0
    _per_gift(runtime, supporter)
    with runtime.read_session() as session:
        gift_id = session.exec(select(Gift.id).where(Gift.order_id == order_id)).one()
    run_job(runtime, card.worker, "receipts.issue_for_gift", gift_id=gift_id)
    [receipt] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    assert str(newer_id) in receipt.content["refunds_shown"]
    receipt_text = text_of(runtime, receipt)
    assert "we will claim £1.25 Gift Aid" in receipt_text and "Returned to you since" not in receipt_text

    card.becomes(older, "succeeded")
    card.deliver()
    assert refund_row(runtime, newer).gift_amount == 500
    with runtime.read_session() as session:
        gift = session.get(Gift, gift_id)
        order = session.get(Order, order_id)
        assert gift is not None and order is not None
        assert (gift.returned_amount, order.refunded_amount) == (500, goods)

    fixes = [d for d in corrections(runtime) if d.corrects_id == receipt.id]
    assert len(fixes) == 1, [(d.reference, d.content) for d in corrections(runtime)]
    [fix] = fixes
    assert fix.refund_id == newer_id
    text = text_of(runtime, fix)
    for expected in (
        f"CORRECTION: this replaces receipt {receipt.reference}",
        f"£5.00 of it came off this gift, not what {receipt.reference} counted",
        "Returned in all £5.00",
        "Corrected amount £0.00",
        "we will claim no Gift Aid on this gift",
    ):
        assert expected in text, (expected, text)

    # The same job again issues nothing more.
    count = len(documents(runtime))
    run_job(runtime, card.worker, "receipts.issue_correction", refund_id=newer_id)
    assert len(documents(runtime)) == count


def test_a_shown_refund_with_nothing_from_the_gift_that_fails_gives_the_gift_no_correction(
    runtime: Runtime, card: Card, mailbox: Mailbox
) -> None:
    """The receipt listed a refund that came off the goods only; the refund then fails. Nothing it returned was
    counted on the gift's receipt, so the gift's receipt stays right: no correction of the gift (before, the job
    issued one saying the refund 'did not reach you' and replacing a receipt that was not wrong)."""
    supporter = declared_supporter(runtime, preference=StatementPreference.ANNUAL)
    order_id, goods = basket(runtime, card, supporter, donation=500)
    shirt = card.refund(goods)
    card.deliver()
    _per_gift(runtime, supporter)
    with runtime.read_session() as session:
        gift_id = session.exec(select(Gift.id).where(Gift.order_id == order_id)).one()
    run_job(runtime, card.worker, "receipts.issue_for_gift", gift_id=gift_id)
    [receipt] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    assert str(refund_row(runtime, shirt).id) in receipt.content["refunds_shown"]

    card.becomes(shirt, "failed")
    card.deliver()
    assert [d.reference for d in corrections(runtime) if d.corrects_id == receipt.id] == []
