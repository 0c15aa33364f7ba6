"""An erased supporter's regular gift that still takes money (the erasure asked the provider to cancel it, and the
provider refused for good) can still be cancelled by staff from the erased record's page: money must never keep
being taken from someone erased. Everything else stays refused on an erased record."""

from __future__ import annotations

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import Supporter
from giving import privacy
from payments import service as payments_service
from tests.staff.conftest import add_supporter
from tests.staff.test_regular_gift_pages import add_regular_gift, cancel_jobs, regular_of


def test_staff_can_stop_an_erased_supporters_regular_gift_the_erasure_could_not_stop(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    regular_id = add_regular_gift(runtime, supporter_id)
    with runtime.unit_of_work() as uow:
        privacy.erase_supporter(uow, runtime.settings, supporter_id)
    assert regular_of(runtime, regular_id).cancel_requested_by  # the erasure asked for it
    # The provider refused the cancellation for good (the job's give-up hook): the plan still takes payments.
    with runtime.unit_of_work() as uow:
        payments_service.cancellation_given_up(uow, regular_id, "GoCardless answered 503 service_unavailable")
    assert regular_of(runtime, regular_id).cancel_requested_at is None
    jobs_before = len(cancel_jobs(runtime))

    csrf = logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}")
    assert page.status_code == 200
    action = f"/staff/supporters/{supporter_id}/regular-gifts/{regular_id}/cancel"
    assert f'action="{action}"' in page.text  # offered on the erased record's page
    assert f'action="/staff/supporters/{supporter_id}/notes"' not in page.text  # nothing else is

    answer = client.post(action, data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.status_code == 303
    regular = regular_of(runtime, regular_id)
    assert regular.cancel_requested_by == "fundraiser@example.org"
    assert len(cancel_jobs(runtime)) == jobs_before + 1
    with runtime.read_session() as session:
        supporter = session.exec(select(Supporter).where(Supporter.id == supporter_id)).one()
        assert supporter.erased_at is not None and supporter.email is None
