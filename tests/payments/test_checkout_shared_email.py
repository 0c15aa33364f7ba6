"""Two people who share one email address (couples often do: docs/crm.md) give through the donate form (found in
review): one partner's Gift Aid tick must not make the other partner's gifts claimable."""

from __future__ import annotations

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from crm.models import Declaration, DeclarationScope, ReviewItem, Supporter
from giftaid import service as giftaid_service
from payments.models import Checkout, Gift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.giftaid.factories import make_gift
from tests.payments.checkout_support import StripeCheckout, donate
from tests.webhooks.support import EventsWorker, app_client, catalogue, deliver, install, reading, settings, worker

__all__ = ["app_client", "catalogue", "settings", "worker"]


def test_a_partners_gift_aid_tick_covers_their_own_gift_only(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Ola gave £20 and never declared. Ben gives on the shared email and ticks Gift Aid: his declaration (his name)
    is recorded for the gift he gives now; Ola's gift stays unclaimable (HMRC: a declaration is one donor's,
    giftaid.md §1C rules 10 and 16), and staff see the name mismatch to sort out."""
    ola = seed_supporter(runtime, "Ola")
    scenario = Scenario(runtime)
    session_id = scenario.one_off_card_gift(ola, 2000)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    with reading(runtime) as db:
        supporter = db.get(Supporter, ola)
        assert supporter is not None
        olas_gift = db.exec(select(Gift).where(Gift.stripe_checkout_session_id == session_id)).one()
    StripeCheckout(fake_stripe)
    response = donate(app_client, first_name="Ben", last_name="Donor", email=supporter.email, gift_aid="yes")
    assert response.status_code == 303, response.text

    with reading(runtime) as db:
        [declaration] = db.exec(select(Declaration)).all()
        [checkout] = db.exec(select(Checkout).where(Checkout.declaration_id == declaration.id)).all()
        after = giftaid_service.explain(db, runtime.settings, olas_gift.id)
        reviews = db.exec(select(ReviewItem).where(ReviewItem.supporter_id == ola)).all()
    assert (declaration.first_name, declaration.scope, declaration.gift_id) == ("Ben", DeclarationScope.THIS_GIFT, None)
    assert after.code == "no_declaration", after.reason
    assert [r.kind for r in reviews] == ["name_mismatch"]
    # Ben's own gift, when it arrives, names his declaration (as the checkout's gift does) and is claimable.
    bens_gift = make_gift(runtime, ola, amount=checkout.amount, received_on=uk_today(), declaration_id=declaration.id)
    with reading(runtime) as db:
        assert giftaid_service.explain(db, runtime.settings, bens_gift).code is None


def test_the_records_own_donor_still_declares_for_the_past_four_years_and_the_future(
    runtime: Runtime, app_client: TestClient, fake_stripe: FakeProvider
) -> None:
    ola = seed_supporter(runtime, "Ola")
    with reading(runtime) as db:
        supporter = db.get(Supporter, ola)
        assert supporter is not None
    StripeCheckout(fake_stripe)
    response = donate(app_client, first_name="OLA", last_name="donor", email=supporter.email, gift_aid="yes")
    assert response.status_code == 303, response.text
    with reading(runtime) as db:
        [declaration] = db.exec(select(Declaration)).all()
    assert declaration.scope == DeclarationScope.PAST_4_YEARS_AND_FUTURE
