"""`giving giftaid ...` against contract.md at edges found in review: a folder that cannot be written is a message and
exit 1, not a traceback (cli.py: "errors exit 1 with a message, no traceback"); `explain` of a gift we do not have
is such an error (exit 1, nothing on stdout), like `tokens create` of an unknown email."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from core.runtime import Runtime
from giftaid import service
from tests.giftaid.factories import TODAY, donor, make_gift, run_giving


def _claim(runtime: Runtime) -> uuid.UUID:
    make_gift(runtime, donor(runtime), received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        claim_id = service.build_claim(uow, runtime.settings, through=TODAY, actor="t", today=TODAY).claim_id
    assert claim_id is not None
    return claim_id


def test_export_into_a_folder_that_cannot_be_written_is_a_message(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    claim_id = _claim(runtime)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    result = run_giving(
        ["giftaid", "export", str(claim_id), "--out", str(blocker / "out")], runtime.settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: could not write into"), result.stderr


def test_explain_of_an_unknown_gift_is_an_error_with_a_message(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = run_giving(["giftaid", "explain", str(uuid.uuid4())], runtime.settings, monkeypatch, tmp_path)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith("error: no gift"), result.stderr
    gift = make_gift(runtime, donor(runtime), received_on=dt.date(2025, 6, 1))
    known = run_giving(["giftaid", "explain", str(gift)], runtime.settings, monkeypatch, tmp_path)
    assert known.exit_code == 0 and known.stdout.startswith(str(gift)), known.output


def test_gateway_list_shows_the_correlation_ids_hmrc_holds(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`list` recovers a lost correlation id (giftaid.md §3.1): the service had it, no command or page reached it."""
    import json

    from tests.giftaid.fake_gateway import PASSWORD, SENDER_ID, FakeGateway

    gateway = FakeGateway()
    gateway.start()
    try:
        hmrc = {"gateway_url": gateway.url, "sender_id": SENDER_ID, "password": PASSWORD, "vendor_id": "1234"}
        from pydantic import SecretStr

        secret = {**hmrc, "password": SecretStr(PASSWORD)}
        settings = runtime.settings.model_copy(update={"hmrc": runtime.settings.hmrc.model_copy(update=secret)})
        claim_id = _claim(runtime)
        with runtime.unit_of_work() as uow:
            correlation_id = service.submit_claim(uow, settings, claim_id, actor="f").correlation_id
        for key, value in hmrc.items():
            monkeypatch.setenv(f"GIVING_HMRC__{key.upper()}", value)
        result = run_giving(["giftaid", "gateway-list", "--json"], settings, monkeypatch, tmp_path)
    finally:
        gateway.stop()
    assert result.exit_code == 0, result.output
    assert [r["correlation_id"] for r in json.loads(result.stdout)["items"]] == [correlation_id]


def test_submit_again_sends_a_claim_whose_first_submission_got_no_answer(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A submission answered with a proxy's HTML page is kept and the claim stays `built` with an `unknown` error:
    `submit` refuses to send it blindly (exit 1 with the reason), and `submit --again`, once finance has checked the
    gateway's list, sends it."""
    from tests.giftaid.fake_gateway import PASSWORD, SENDER_ID, FakeGateway

    gateway = FakeGateway()
    gateway.start()
    try:
        hmrc = {"gateway_url": gateway.url, "sender_id": SENDER_ID, "password": PASSWORD, "vendor_id": "1234"}
        for key, value in hmrc.items():
            monkeypatch.setenv(f"GIVING_HMRC__{key.upper()}", value)
        claim_id = _claim(runtime)
        gateway.hook = lambda raw, reply: b"<html><body>504 Gateway Time-out</body></html>"
        unanswered = run_giving(["giftaid", "submit", str(claim_id)], runtime.settings, monkeypatch, tmp_path)
        gateway.hook = None
        blind = run_giving(["giftaid", "submit", str(claim_id)], runtime.settings, monkeypatch, tmp_path)
        again = run_giving(["giftaid", "submit", str(claim_id), "--again"], runtime.settings, monkeypatch, tmp_path)
    finally:
        gateway.stop()
    assert unanswered.exit_code == 1 and "HMRC may have received the claim" in unanswered.stderr, unanswered.output
    assert "None" not in unanswered.stderr
    assert blind.exit_code == 1 and "may have reached HMRC" in blind.stderr, blind.output
    assert again.exit_code == 0 and "submitted: correlation id" in again.stdout, again.output
    with runtime.read_session() as session:
        assert service.get_claim(session, claim_id).status == "submitted"
