"""Erasure racing what arrives for the same person at the same moment (found in review): a donation form given
with the email of a supporter being erased must not put their name, address or postcode back on the erased record
(the form found the record by email before the erasure committed, then wrote to it after)."""

from __future__ import annotations

from sqlmodel import select

from core.db import UnitOfWork
from core.runtime import Runtime
from crm import service as crm_service
from crm.models import Supporter, SupporterAddress
from crm.validation import DonorDetails
from giving.privacy import erase_supporter
from tests.crm.helpers import at_the_same_moment, make_supporter


def _give_with_the_same_email(uow: UnitOfWork) -> None:
    """What the donate form does first: find the donor by email (or make a record) with the address given."""
    details = DonorDetails(
        first_name="Ada",
        last_name="Lovelace",
        email="ada@example.org",
        address_line1="3 New Street",
        town="Folkestone",
        postcode="CT20 1AA",
    ).normalised()
    crm_service.find_or_create_supporter(uow, details, source="donate")


def test_a_donation_form_sent_while_the_donor_is_erased_leaves_the_erased_record_blank(runtime: Runtime) -> None:
    ada = make_supporter(runtime)
    errors = at_the_same_moment(
        runtime,
        lambda uow: erase_supporter(uow, runtime.settings, ada),
        _give_with_the_same_email,
    )
    assert errors == []
    with runtime.read_session() as session:
        erased = session.get(Supporter, ada)
        assert erased is not None and erased.erased_at is not None
        assert (erased.email, erased.first_name, erased.postcode) == (None, "Erased", None)
        addresses = session.exec(select(SupporterAddress).where(SupporterAddress.supporter_id == ada)).all()
        assert [(a.line1, a.postcode) for a in addresses] == [("", "")]
        # The gift goes on: to a new record, which is the person as they are now.
        again = session.exec(select(Supporter).where(Supporter.email == "ada@example.org")).one()
        assert again.id != ada and again.erased_at is None and again.postcode == "CT20 1AA"
