"""A claim of several parts (schedules of 1,000 lines, Charities Online messages of 500,000): `files` in the JSON of
`POST /api/giftaid/claims` and of a claim named only `schedule.ods` and `claim.xml`, i.e. part 1 of each. An API
client fetching `files` sent HMRC the first part only and under-claimed. Every part is listed now (`?part=N`), and
`giving giftaid claim --json` lists every file it wrote.

A take-off then leaves a message's last schedule empty (no schedule moves into another message): the files written
in one go were `schedule-1-of-3` and `schedule-3-of-3` with no file 2, and finance was left looking for it. The part
numbers stay (they are the claim's history and the downloads' `?part=N`), `files` lists only parts that have lines,
and `giving giftaid export` says which schedule was emptied and that it has no file.

The part sizes are made small (as test_s17b_messages_keep_their_lines does) so a few gifts make several of each."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import time_machine

from core.clock import UK, uk_today
from core.runtime import Runtime
from core.settings import Settings
from giftaid import schedule, service
from giftaid import xml as claim_xml
from tests.giftaid.factories import donor, make_gift, run_giving, staff_headers

BUILT_ON = dt.date(2026, 4, 1)  # gifts of the tax year 2021-22 are still in time
LATE = dt.date(2026, 4, 6)  # ... and no longer

DATES = [
    dt.date(2021, 6, 1),  # schedule 1 (message 1): both out of time on LATE
    dt.date(2021, 7, 1),
    dt.date(2022, 5, 1),  # schedule 2 (message 1)
    dt.date(2023, 5, 1),
    dt.date(2024, 5, 1),  # schedule 3 (message 2)
    dt.date(2025, 5, 1),
]


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule, "ROWS_PER_SCHEDULE", 2)
    monkeypatch.setattr(claim_xml, "MAX_GAD_PER_MESSAGE", 4)


def _recent_gifts(runtime: Runtime, count: int) -> None:
    today = uk_today()
    for n in range(count):
        make_gift(runtime, donor(runtime), amount=10_000, received_on=today - dt.timedelta(days=30 + n))


def test_the_api_lists_every_part_of_a_claim(runtime: Runtime, client: Any, small_parts: None) -> None:
    _recent_gifts(runtime, 6)  # 3 schedules, 2 messages
    finance = staff_headers(runtime, "finance")
    built = client.post("/api/giftaid/claims", json={"through": uk_today().isoformat()}, headers=finance)
    assert built.status_code == 201, built.text
    claim_id = built.json()["claim_id"]
    base = f"/api/giftaid/claims/{claim_id}"
    expected = [
        f"{base}/schedule.ods?part=1",
        f"{base}/schedule.ods?part=2",
        f"{base}/schedule.ods?part=3",
        f"{base}/claim.xml?part=1",
        f"{base}/claim.xml?part=2",
    ]
    assert built.json()["files"] == expected
    shown = client.get(base, headers=finance).json()
    assert (shown["schedules"], shown["messages"], shown["files"]) == (3, 2, expected)
    listed = client.get("/api/giftaid/claims", headers=finance).json()["items"]
    assert [c["files"] for c in listed] == [expected]
    # Every file listed is there, and together they carry every line once.
    gads = 0
    for url in expected:
        answer = client.get(url, headers=finance)
        assert answer.status_code == 200, (url, answer.text)
        gads += answer.content.count(b"<GAD>")
    assert gads == 6


def test_a_claim_of_one_part_keeps_its_two_files(runtime: Runtime, client: Any) -> None:
    _recent_gifts(runtime, 2)
    finance = staff_headers(runtime, "finance")
    built = client.post("/api/giftaid/claims", json={"through": uk_today().isoformat()}, headers=finance).json()
    base = f"/api/giftaid/claims/{built['claim_id']}"
    assert built["files"] == [f"{base}/schedule.ods", f"{base}/claim.xml"]


def test_the_claim_command_lists_every_file_it_wrote(
    runtime: Runtime, settings: Settings, small_parts: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _recent_gifts(runtime, 5)  # 3 schedules (the last short), 2 messages
    out = tmp_path / "claim"
    result = run_giving(
        ["giftaid", "claim", "--through", uk_today().isoformat(), "--out", str(out), "--json"],
        settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    names = sorted(Path(f).name for f in body["files"])
    assert names == sorted(p.name for p in out.iterdir())
    assert [n.rsplit("-", 3)[-3:] for n in names if n.endswith(".ods")] == [
        ["1", "of", "3.ods"],
        ["2", "of", "3.ods"],
        ["3", "of", "3.ods"],
    ]
    assert len([n for n in names if n.endswith(".xml")]) == 2


def _build_then_empty_schedule_2(runtime: Runtime) -> uuid.UUID:
    """Message 2 handed out while every gift was in time; then message 1 written on LATE: schedule 1's two gifts are
    out of time and taken off, schedule 2 moves down into its place, and message 1's last schedule (2) is empty."""
    for day in DATES:
        make_gift(runtime, donor(runtime), amount=10_000, received_on=day)
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=BUILT_ON, actor="t", today=BUILT_ON)
    assert result.claim_id is not None
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, result.claim_id)
        service.write_xml_part(uow.session, runtime.settings, claim, 2, io.BytesIO(), actor="f", today=BUILT_ON)
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, result.claim_id)
        service.write_xml_part(uow.session, runtime.settings, claim, 1, io.BytesIO(), actor="f", today=LATE)
    return result.claim_id


def test_an_emptied_schedule_is_not_listed(runtime: Runtime, client: Any, small_parts: None) -> None:
    claim_id = _build_then_empty_schedule_2(runtime)
    finance = staff_headers(runtime, "finance")
    base = f"/api/giftaid/claims/{claim_id}"
    with time_machine.travel(dt.datetime(2026, 4, 6, 12, 0, tzinfo=UK), tick=False):
        shown = client.get(base, headers=finance).json()
        assert shown["files"] == [
            f"{base}/schedule.ods?part=1",
            f"{base}/schedule.ods?part=3",
            f"{base}/claim.xml?part=1",
            f"{base}/claim.xml?part=2",
        ]
        assert shown["schedule_parts"] == [1, 3]
        for url in shown["files"]:
            assert client.get(url, headers=finance).status_code == 200, url


def test_export_says_which_schedule_was_emptied(
    runtime: Runtime, settings: Settings, small_parts: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    claim_id = _build_then_empty_schedule_2(runtime)
    out = tmp_path / "files"
    with time_machine.travel(dt.datetime(2026, 4, 6, 12, 0, tzinfo=UK), tick=False):
        result = run_giving(["giftaid", "export", str(claim_id), "--out", str(out)], settings, monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert [n for n in written if n.endswith(".ods")] == [
        n for n in written if n.endswith(("schedule-1-of-3.ods", "schedule-3-of-3.ods"))
    ]
    assert len([n for n in written if n.endswith(".ods")]) == 2
    # stdout is still the paths written; the missing number is explained.
    assert sorted(Path(line).name for line in result.stdout.splitlines()) == written
    assert "schedule 2 of 3" in result.stderr and "no file" in result.stderr
