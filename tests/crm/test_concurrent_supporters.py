"""Two forms with the same new email at the same moment end on one supporter, and neither fails."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlmodel import select

from core.db import UnitOfWork
from core.runtime import Runtime
from crm import service
from crm.models import Supporter
from crm.validation import DonorDetails
from tests.crm.helpers import at_the_same_moment


def test_the_same_new_email_twice_at_once_gives_one_supporter(runtime: Runtime) -> None:
    details = DonorDetails(first_name="Nadia", last_name="Haddad", email="nadia@example.org").normalised()
    found: dict[str, uuid.UUID] = {}

    def form(name: str, source: str) -> Callable[[UnitOfWork], None]:
        def record(uow: UnitOfWork) -> None:
            found[name] = service.find_or_create_supporter(uow, details, source=source).id

        return record

    errors = at_the_same_moment(runtime, form("first", "donate_form"), form("second", "shop"))
    assert errors == []
    assert found["first"] == found["second"]
    with runtime.read_session() as session:
        assert len(session.exec(select(Supporter)).all()) == 1
