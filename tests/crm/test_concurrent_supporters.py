"""Two forms with the same new email at the same moment end on one supporter, and neither fails."""

from __future__ import annotations

import threading
import time
import uuid

from sqlmodel import select

from core.runtime import Runtime
from crm import service
from crm.models import Supporter
from crm.validation import DonorDetails


def test_the_same_new_email_twice_at_once_gives_one_supporter(runtime: Runtime) -> None:
    details = DonorDetails(first_name="Nadia", last_name="Haddad", email="nadia@example.org").normalised()
    first_inserted = threading.Event()
    found: dict[str, uuid.UUID] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with runtime.unit_of_work() as uow:
                found["first"] = service.find_or_create_supporter(uow, details, source="donate_form").id
                first_inserted.set()
                time.sleep(0.5)  # the second form arrives while this one is still uncommitted
        except BaseException as exc:
            errors.append(exc)
            first_inserted.set()

    def second() -> None:
        first_inserted.wait(5)
        try:
            with runtime.unit_of_work() as uow:
                found["second"] = service.find_or_create_supporter(uow, details, source="shop").id
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert found["first"] == found["second"]
    with runtime.read_session() as session:
        assert len(session.exec(select(Supporter)).all()) == 1
