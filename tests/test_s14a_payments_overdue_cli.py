"""`giving payments overdue [--today YYYY-MM-DD]` run as staff run it (the installed command, a subprocess) against a
real database: the list as of a given day, its order and format, and a bad date as a message and exit 1."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

from core.runtime import Runtime
from payments.models import Method, Provider, RegularGift, RegularGiftStatus
from tests.fakes.scenarios import seed_supporter, unique

GIVING = str(Path(sys.executable).parent / "giving")


def _overdue(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIVING_")}
    env.update(GIVING_DATABASE__URL=database_url, GIVING_ENV="test")
    return subprocess.run(
        [GIVING, "payments", "overdue", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _regular(runtime: Runtime, supporter: uuid.UUID, amount: int, due: dt.date, status: RegularGiftStatus) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        regular = RegularGift(
            supporter_id=supporter,
            amount=amount,
            provider=Provider.STRIPE,
            method=Method.CARD,
            status=status,
            next_due_on=due,
            stripe_subscription_id=unique("sub_"),
        )
        uow.session.add(regular)
        uow.session.flush()
        return regular.id


def test_overdue_lists_the_monthly_gifts_overdue_on_the_day_given(
    database_url: str, runtime: Runtime, tmp_path: Path
) -> None:
    supporter = seed_supporter(runtime, "Olive Overdue")
    march = _regular(runtime, supporter, 1000, dt.date(2026, 3, 1), RegularGiftStatus.ACTIVE)
    later = _regular(runtime, supporter, 550, dt.date(2026, 3, 8), RegularGiftStatus.IN_ARREARS)
    _regular(runtime, supporter, 700, dt.date(2026, 1, 1), RegularGiftStatus.CANCELLED)  # ended: never overdue

    # The grace period is 7 days by default ([donations] regular_grace_days): due 1 March, overdue from 9 March.
    on_time = _overdue(database_url, tmp_path, "--today", "2026-03-08")
    assert (on_time.returncode, on_time.stdout) == (0, ""), on_time.stderr

    one = _overdue(database_url, tmp_path, "--today", "2026-03-09")
    assert one.returncode == 0, one.stderr
    assert one.stdout == f"2026-03-01 {march} supporter {supporter} £10.00 (stripe)\n"

    both = _overdue(database_url, tmp_path, "--today", "2026-03-20")
    assert both.returncode == 0, both.stderr
    assert both.stdout.splitlines() == [
        f"2026-03-01 {march} supporter {supporter} £10.00 (stripe)",
        f"2026-03-08 {later} supporter {supporter} £5.50 (stripe)",
    ]

    # Without --today: today in the UK (these March 2026 dates are long past by then, or not yet: either way the
    # command answers as of the real date, which is what staff and the 6-hourly alert see).
    default = _overdue(database_url, tmp_path)
    assert default.returncode == 0, default.stderr
    expected_today = _overdue(database_url, tmp_path, "--today", _uk_today().isoformat())
    assert default.stdout == expected_today.stdout


def test_overdue_refuses_a_day_that_is_not_a_date(database_url: str, runtime: Runtime, tmp_path: Path) -> None:
    result = _overdue(database_url, tmp_path, "--today", "2026-02-30")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: --today must be a date YYYY-MM-DD"), result.stderr
    assert "Traceback" not in result.stderr


def _uk_today() -> dt.date:
    from core.clock import uk_today

    return uk_today()
