"""The purge of what was kept for HMRC (found in review): the Charities Online message a claim was submitted with is
kept with the claim (`giftaid_messages`) and names each donor (forename, surname, house, postcode). Once an erased
donor's time is over, the purge blanks the claim's donor rows and declarations, and must blank their details in the
kept messages too; the other donors on the same claim keep theirs."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from core.runtime import Runtime
from giftaid import service
from giftaid.models import ClaimStatus, Message
from giving.privacy import erase_supporter, purge_due
from tests.giftaid.factories import TODAY, donor, make_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]  # fixtures


def test_the_purge_blanks_the_erased_donor_in_the_messages_sent_to_hmrc(runtime: Runtime, gateway: FakeGateway) -> None:
    ada = donor(runtime)
    bob = donor(runtime, first_name="Bob", last_name="Jones", house="7", postcode="CT17 9BB")
    make_gift(runtime, ada, received_on=dt.date(2025, 6, 1))
    make_gift(runtime, bob, received_on=dt.date(2025, 6, 2))
    with runtime.unit_of_work() as uow:
        built = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert built.claim_id is not None
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, runtime.settings, built.claim_id, actor="f@example.org")
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, built.claim_id, actor="f").status == ClaimStatus.ACCEPTED
    with runtime.read_session() as session:
        sent = session.exec(select(Message).where(Message.direction == "sent", Message.function == "submit")).one()
    assert "<Sur>Lovelace</Sur><House>12</House>" in sent.body

    with runtime.unit_of_work() as uow:
        result = erase_supporter(uow, runtime.settings, ada)
    assert result.purge_after == dt.date(2032, 4, 5)
    with runtime.read_session() as session:
        # Kept while HMRC may ask for it.
        assert "Lovelace" in session.exec(select(Message).where(Message.id == sent.id)).one().body
    with runtime.unit_of_work() as uow:
        assert purge_due(uow, runtime.settings, today=dt.date(2032, 4, 6)) == 1
    with runtime.read_session() as session:
        bodies = [m.body for m in session.exec(select(Message)).all()]
    # (CT16 1AA is also the authorised official's postcode in the test settings: the donor element is checked.)
    assert not any(word in body for body in bodies for word in ("Lovelace", "<House>12</House>"))
    assert any("<Donor>[erased]</Donor>" in body for body in bodies)
    assert any("<Fore>Bob</Fore><Sur>Jones</Sur><House>7</House><Postcode>CT17 9BB</Postcode>" in b for b in bodies)
