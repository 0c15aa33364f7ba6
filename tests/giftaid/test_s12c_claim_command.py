"""`giving giftaid claim` against contract.md, line by line: `--format ods|xml|both` writes into DIR only the
schedule(s) and/or the XML message; an unknown format, or a DIR that cannot be written, is exit 1 and claims nothing;
the summary goes to stdout; `--json` is exactly one JSON object; `explain` exits 0 for a gift that is not claimable."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from core.clock import uk_today
from core.runtime import Runtime
from giftaid import service
from giftaid.validator import validate_schedule
from tests.giftaid.factories import donor, make_declaration, make_gift, make_supporter, run_giving


def claimable_gift(runtime: Runtime) -> None:
    today = uk_today()
    make_gift(
        runtime, donor(runtime, made_on=today - dt.timedelta(days=400)), received_on=today - dt.timedelta(days=30)
    )


def claim_count(runtime: Runtime) -> int:
    with runtime.read_session() as session:
        return len(service.list_claims(session))


@pytest.mark.parametrize(
    ("file_format", "suffixes"), [("ods", [".ods"]), ("xml", [".xml"]), ("both", [".ods", ".xml"])]
)
def test_format_writes_only_what_it_names(
    file_format: str, suffixes: list[str], runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """contract: 'writes into DIR only the schedule(s) and/or one Charities Online XML message'."""
    claimable_gift(runtime)
    out = tmp_path / "claim"
    args = ["giftaid", "claim", "--through", uk_today().isoformat(), "--out", str(out), "--format", file_format]
    result = run_giving([*args, "--json"], runtime.settings, monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert sorted(Path(f).suffix for f in body["files"]) == suffixes
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f).name for f in body["files"])


def test_an_unknown_format_is_exit_1_and_claims_nothing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    claimable_gift(runtime)
    out = tmp_path / "claim"
    args = ["giftaid", "claim", "--through", uk_today().isoformat(), "--out", str(out), "--format", "pdf"]
    result = run_giving(args, runtime.settings, monkeypatch, tmp_path)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "--format is ods, xml or both" in result.stderr
    assert not out.exists()
    assert claim_count(runtime) == 0


def test_a_dir_that_cannot_be_written_is_exit_1_and_claims_nothing(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """'1 error' and 'a claim claims its gifts the moment it is built': a claim whose files could not be written
    is not built, so the next run claims the same gifts."""
    claimable_gift(runtime)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["giftaid", "claim", "--through", uk_today().isoformat(), "--out", str(blocker / "claim")]
    result = run_giving(args, runtime.settings, monkeypatch, tmp_path)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: could not write into")
    assert claim_count(runtime) == 0


def test_the_summary_goes_to_stdout_and_the_held_back_gifts_to_stderr(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """'prints a summary' (stdout carries a command's result; logs and notes go to stderr)."""
    claimable_gift(runtime)
    stranger = make_gift(runtime, make_supporter(runtime), received_on=uk_today() - dt.timedelta(days=30))
    out = tmp_path / "claim"
    result = run_giving(
        ["giftaid", "claim", "--through", uk_today().isoformat(), "--out", str(out)],
        runtime.settings,
        monkeypatch,
        tmp_path,
    )

    assert result.exit_code == 0, result.output
    first, *files = result.stdout.splitlines()
    assert first.startswith("claim ") and "1 lines" in first and "Gift Aid £25.00" in first
    assert sorted(Path(f.strip()).name for f in files) == sorted(p.name for p in out.iterdir())
    assert f"{stranger}  no_declaration: " in result.stderr


def test_json_is_exactly_one_object_when_there_is_nothing_to_claim(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """'with `--json`, stdout is exactly one JSON object'; '3 nothing to claim' (and DIR is not made)."""
    stranger = make_gift(runtime, make_supporter(runtime), received_on=uk_today() - dt.timedelta(days=30))
    out = tmp_path / "claim"
    args = ["giftaid", "claim", "--through", uk_today().isoformat(), "--out", str(out), "--json"]
    result = run_giving(args, runtime.settings, monkeypatch, tmp_path)

    assert result.exit_code == 3
    body = json.loads(result.stdout)  # the whole of stdout: one object
    assert body["claim_id"] is None and body["files"] == [] and body["lines"] == 0
    assert body["held_back"] == [{"gift_id": str(stranger), "reason": body["held_back"][0]["reason"]}]
    assert body["held_back"][0]["reason"].startswith("no_declaration: ")
    assert not out.exists()


def test_crown_dependency_donors_are_overseas_in_both_files(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """contract: 'donors in Jersey, Guernsey and the Isle of Man are non-UK for HMRC (postcode `X` in the schedule,
    `Overseas` in the XML)'."""
    today = uk_today()
    made_on = today - dt.timedelta(days=400)
    donors = {
        "Jersey": ("JE", "JE3 1AB"),
        "Guernsey": ("GG", "GY1 1AA"),
        "Mann": ("IM", "IM1 1AA"),
        "Kent": ("GB", "CT16 1AA"),
    }
    for last_name, (country, postcode) in donors.items():
        supporter = make_supporter(runtime, last_name=last_name)
        make_declaration(runtime, supporter, made_on=made_on, last_name=last_name, country=country, postcode=postcode)
        make_gift(runtime, supporter, received_on=today - dt.timedelta(days=30))
    out = tmp_path / "claim"
    result = run_giving(
        ["giftaid", "claim", "--through", today.isoformat(), "--out", str(out), "--json"],
        runtime.settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lines"] == 4

    (ods,) = out.glob("*.ods")
    report = validate_schedule(ods)
    assert report.ok, report.errors
    assert sorted((d.last_name, d.postcode) for d in report.donations) == [
        ("Guernsey", "X"),
        ("Jersey", "X"),
        ("Kent", "CT16 1AA"),
        ("Mann", "X"),
    ]
    (xml,) = out.glob("*.xml")
    text = xml.read_text(encoding="utf-8")
    assert text.count("<Overseas>yes</Overseas>") == 3
    assert "<Postcode>CT16 1AA</Postcode>" in text
    for _, postcode in list(donors.values())[:3]:
        assert postcode not in text
