"""Every rule of giftaid.md §1 (and §4's eligibility check) the data can express, through `explain` — the same
SQL decision a claim applies — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

from core.runtime import Runtime
from core.settings import Settings
from crm.models import DeclarationMethod, DeclarationScope
from giftaid import service
from giftaid.eligibility import Rules, period_end, relevant_value_limit, rules_from
from payments.models import DonorType, GiftStatus
from tests.fixtures.app import make_settings
from tests.giftaid.factories import TODAY, donor, make_declaration, make_gift, make_order, make_supporter


def code_of(runtime: Runtime, gift_id: uuid.UUID, settings: Settings | None = None, today: dt.date = TODAY) -> str:
    with runtime.read_session() as session:
        explanation = service.explain(session, settings or runtime.settings, gift_id, today=today)
    assert explanation.reason.startswith(explanation.code or "claimable")
    return explanation.code or "claimable"


def with_settings(runtime: Runtime, tmp_path, **sections) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(runtime.settings.database.url, tmp_path, **sections)


# --- what qualifies (§1A) ----------------------------------------------------------------------------------------


def test_a_paid_gift_from_an_individual_with_a_declaration_is_claimable(runtime: Runtime) -> None:
    gift = make_gift(runtime, donor(runtime), amount=10_000)
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift, today=TODAY)
    assert explanation.claimable
    assert explanation.reason.startswith("claimable: a gift of £100.00 received on 01/06/2025")
    assert "Gift Aid £25.00" in explanation.reason


def test_a_gift_from_a_company_is_not_a_donation_we_can_claim(runtime: Runtime) -> None:
    gift = make_gift(runtime, donor(runtime), donor_type=DonorType.COMPANY)
    assert code_of(runtime, gift) == "not_a_donation"


def test_a_shop_order_is_a_sale_never_gift_aid(runtime: Runtime) -> None:
    order = make_order(runtime, donor(runtime))
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, order, today=TODAY)
    assert explanation.code == "not_a_donation"
    assert "sale" in explanation.reason


def test_the_donation_line_of_a_basket_is_a_gift_and_claimable(runtime: Runtime) -> None:
    supporter = donor(runtime)
    gift = make_gift(runtime, supporter, amount=500, order_id=make_order(runtime, supporter))
    assert code_of(runtime, gift) == "claimable"


def test_money_not_received_is_not_claimable(runtime: Runtime) -> None:
    supporter = donor(runtime)
    for status in (GiftStatus.PENDING, GiftStatus.FAILED, GiftStatus.CANCELLED):
        assert code_of(runtime, make_gift(runtime, supporter, status=status)) == "not_received"


def test_a_fully_refunded_or_reversed_gift_is_not_claimable(runtime: Runtime) -> None:
    supporter = donor(runtime)
    refunded = make_gift(runtime, supporter, amount=5_000, returned_amount=5_000)
    reversed_ = make_gift(runtime, supporter, amount=5_000, status=GiftStatus.REVERSED)
    assert code_of(runtime, refunded) == "refunded"
    assert code_of(runtime, reversed_) == "refunded"


def test_a_partly_refunded_gift_is_claimed_on_what_the_donor_kept(runtime: Runtime) -> None:
    gift = make_gift(runtime, donor(runtime), amount=5_000, returned_amount=2_000)
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift, today=TODAY)
    assert explanation.claimable
    assert "£30.00 (what the donor kept after £20.00 was returned)" in explanation.reason


def test_a_gift_in_another_currency_is_held_back(runtime: Runtime) -> None:
    gift = make_gift(runtime, donor(runtime), currency="EUR")
    assert code_of(runtime, gift) == "not_sterling"


def test_a_future_dated_gift_cannot_be_claimed(runtime: Runtime) -> None:
    # F2: a donation dated 2025-11-02 on claim date 2025-11-01.
    gift = make_gift(runtime, donor(runtime), received_on=dt.date(2025, 11, 2))
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift, today=dt.date(2025, 11, 1))
    assert explanation.code == "future_date"
    assert "Gift Aid donation date cannot be in the future" in explanation.reason


def test_gifts_before_hmrc_recognised_the_charity_are_not_claimable(runtime: Runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = with_settings(runtime, tmp_path, charity={"recognised_on": "2023-03-01"})
    supporter = donor(runtime, made_on=dt.date(2023, 6, 1))
    before = make_gift(runtime, supporter, received_on=dt.date(2023, 2, 28))
    on_the_day = make_gift(runtime, supporter, received_on=dt.date(2023, 3, 1))
    assert code_of(runtime, before, settings) == "before_recognition"
    assert code_of(runtime, on_the_day, settings) == "claimable"


# --- time limits (§1D rule 17) -----------------------------------------------------------------------------------


def test_a_trust_claims_within_four_years_of_the_end_of_the_tax_year(runtime: Runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # giftaid.md: a trust donation on 1 Jun 2021 (tax year ending 5 Apr 2022) can be claimed up to 5 Apr 2026.
    settings = with_settings(runtime, tmp_path, charity={"financial_year_end": "04-05"})
    gift = make_gift(runtime, donor(runtime, made_on=dt.date(2021, 5, 1)), received_on=dt.date(2021, 6, 1))
    assert code_of(runtime, gift, settings, today=dt.date(2026, 4, 5)) == "claimable"
    assert code_of(runtime, gift, settings, today=dt.date(2026, 4, 6)) == "out_of_time"


def test_a_cio_claims_within_four_years_of_its_accounting_year_end(runtime: Runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # giftaid.md: a CIO with a 31 Dec year end and a donation on 15 Jun 2021 can claim up to 31 Dec 2025.
    settings = with_settings(runtime, tmp_path, charity={"financial_year_end": "12-31"})
    gift = make_gift(runtime, donor(runtime, made_on=dt.date(2021, 5, 1)), received_on=dt.date(2021, 6, 15))
    assert code_of(runtime, gift, settings, today=dt.date(2025, 12, 31)) == "claimable"
    with runtime.read_session() as session:
        late = service.explain(session, settings, gift, today=dt.date(2026, 1, 1))
    assert late.code == "out_of_time"
    assert "ended on 31/12/2025" in late.reason


def test_period_ends_and_deadlines() -> None:
    assert period_end(dt.date(2021, 6, 1), "04-05") == dt.date(2022, 4, 5)
    assert period_end(dt.date(2022, 4, 5), "04-05") == dt.date(2022, 4, 5)
    assert period_end(dt.date(2022, 4, 6), "04-05") == dt.date(2023, 4, 5)
    rules = Rules(dt.date(2026, 4, 6), dt.date(2000, 1, 1), "04-05", 2000, True)
    assert rules.out_of_time_through == dt.date(2022, 4, 5)


# --- declarations (§1C) ------------------------------------------------------------------------------------------


def test_no_declaration_no_claim(runtime: Runtime) -> None:
    gift = make_gift(runtime, make_supporter(runtime))
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift, today=TODAY)
    assert explanation.code == "no_declaration"
    assert explanation.reason == "no_declaration: no Gift Aid declaration covers a gift received on 01/06/2025"


def test_an_enduring_declaration_is_backdated_four_years_and_no_more(runtime: Runtime) -> None:
    supporter = donor(runtime, made_on=dt.date(2024, 1, 10))
    inside = make_gift(runtime, supporter, received_on=dt.date(2020, 1, 10))
    outside = make_gift(runtime, supporter, received_on=dt.date(2020, 1, 9))
    later = make_gift(runtime, supporter, received_on=dt.date(2024, 1, 10))
    made_on = dt.date(2024, 1, 10)
    assert code_of(runtime, inside, today=made_on) == "claimable"
    assert code_of(runtime, outside, today=made_on) == "no_declaration"
    assert code_of(runtime, later, today=made_on) == "claimable"


def test_a_future_gifts_declaration_does_not_cover_earlier_gifts(runtime: Runtime) -> None:
    supporter = donor(runtime, made_on=dt.date(2025, 3, 1), scope=DeclarationScope.FUTURE)
    assert code_of(runtime, make_gift(runtime, supporter, received_on=dt.date(2025, 2, 28))) == "no_declaration"
    assert code_of(runtime, make_gift(runtime, supporter, received_on=dt.date(2025, 3, 1))) == "claimable"


def test_a_this_gift_declaration_covers_that_gift_only(runtime: Runtime) -> None:
    supporter = make_supporter(runtime)
    covered = make_gift(runtime, supporter, received_on=dt.date(2025, 5, 1))
    other = make_gift(runtime, supporter, received_on=dt.date(2025, 5, 2))
    make_declaration(runtime, supporter, made_on=dt.date(2025, 5, 1), scope=DeclarationScope.THIS_GIFT, gift_id=covered)
    assert code_of(runtime, covered) == "claimable"
    assert code_of(runtime, other) == "no_declaration"


def test_the_declaration_given_with_a_gift_covers_it(runtime: Runtime) -> None:
    supporter = make_supporter(runtime)
    declaration = make_declaration(runtime, supporter, made_on=dt.date(2025, 5, 1), scope=DeclarationScope.THIS_GIFT)
    gift = make_gift(runtime, supporter, received_on=dt.date(2025, 5, 1), declaration_id=declaration)
    assert code_of(runtime, gift) == "claimable"


def test_a_period_declaration_covers_its_period(runtime: Runtime) -> None:
    supporter = donor(
        runtime,
        made_on=dt.date(2025, 1, 1),
        scope=DeclarationScope.PERIOD,
        start=dt.date(2025, 1, 1),
        end=dt.date(2025, 6, 30),
    )
    assert code_of(runtime, make_gift(runtime, supporter, received_on=dt.date(2025, 6, 30))) == "claimable"
    assert code_of(runtime, make_gift(runtime, supporter, received_on=dt.date(2025, 7, 1))) == "no_declaration"


def test_cancellation_is_not_retrospective(runtime: Runtime) -> None:
    supporter = donor(runtime, cancellation_effective_on=dt.date(2025, 6, 1))
    before = make_gift(runtime, supporter, received_on=dt.date(2025, 5, 31))
    after = make_gift(runtime, supporter, received_on=dt.date(2025, 6, 1))
    assert code_of(runtime, before) == "claimable"
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, after, today=TODAY)
    assert explanation.code == "declaration_cancelled"
    assert "cancelled from 01/06/2025" in explanation.reason


def test_a_voided_oral_declaration_is_treated_as_never_made(runtime: Runtime) -> None:
    supporter = donor(
        runtime,
        method=DeclarationMethod.ORAL,
        confirmation_sent_on=dt.date(2024, 1, 12),
        cancellation_effective_on=dt.date(2024, 1, 20),
        voided=True,
    )
    gift = make_gift(runtime, supporter, received_on=dt.date(2023, 6, 1))
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift, today=TODAY)
    assert explanation.code == "declaration_cancelled"
    assert "void" in explanation.reason


def test_an_oral_declaration_needs_its_written_confirmation(runtime: Runtime) -> None:
    supporter = donor(runtime, method=DeclarationMethod.ORAL)
    gift = make_gift(runtime, supporter)
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift, today=TODAY)
    assert explanation.code == "oral_unconfirmed"
    assert "no written confirmation" in explanation.reason


def test_an_oral_declaration_waits_for_its_thirty_day_window_unless_set_otherwise(runtime: Runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    supporter = donor(runtime, method=DeclarationMethod.ORAL, confirmation_sent_on=dt.date(2025, 10, 1))
    gift = make_gift(runtime, supporter, received_on=dt.date(2025, 9, 1))
    # The window runs to 31 October: claimable from 1 November (it covers gifts before the confirmation too).
    assert code_of(runtime, gift, today=dt.date(2025, 10, 31)) == "oral_unconfirmed"
    assert code_of(runtime, gift, today=dt.date(2025, 11, 1)) == "claimable"
    eager = with_settings(runtime, tmp_path, giftaid={"wait_for_oral_cancellation_window": False})
    assert code_of(runtime, gift, eager, today=dt.date(2025, 10, 2)) == "claimable"


def test_an_oral_declaration_with_a_recording_is_effective(runtime: Runtime) -> None:
    supporter = donor(runtime, method=DeclarationMethod.ORAL, evidence={"recording_id": "call-0042"})
    assert code_of(runtime, make_gift(runtime, supporter)) == "claimable"


def test_the_best_of_several_declarations_wins(runtime: Runtime) -> None:
    supporter = make_supporter(runtime)
    make_declaration(runtime, supporter, made_on=dt.date(2025, 1, 1), method=DeclarationMethod.ORAL)
    make_declaration(runtime, supporter, made_on=dt.date(2024, 1, 1), postcode="M99 2QD")
    gift = make_gift(runtime, supporter, received_on=dt.date(2025, 2, 1))
    assert code_of(runtime, gift) == "claimable"


# --- the donor's details for HMRC (§1C rule 10, §2) --------------------------------------------------------------


def test_a_declaration_without_a_house_is_held_back(runtime: Runtime) -> None:
    gift = make_gift(runtime, donor(runtime, house=""))
    assert code_of(runtime, gift) == "missing_house"


def test_a_uk_donor_needs_a_postcode_in_hmrcs_format(runtime: Runtime) -> None:
    bad = ["", "CT161AA", "ZZ1 1ZZ9", "ct16 1aa", "CI1 1AA"]
    good = ["CT16 1AA", "M99 2QD", "EC1A 1BB", "W1A 0AX", "GIR 0AA"]
    gifts = {postcode: make_gift(runtime, donor(runtime, postcode=postcode)) for postcode in bad + good}
    assert {p: code_of(runtime, g) for p, g in gifts.items()} == {
        **{p: "invalid_postcode" for p in bad},
        **{p: "claimable" for p in good},
    }


def test_a_non_uk_donor_needs_no_postcode(runtime: Runtime) -> None:
    # Jersey, Guernsey and the Isle of Man are non-UK for HMRC too.
    gift = make_gift(runtime, donor(runtime, country="JE", postcode="", house="1 Rue de la Mer"))
    assert code_of(runtime, gift) == "claimable"


def test_a_declaration_without_a_name_is_held_back(runtime: Runtime) -> None:
    assert code_of(runtime, make_gift(runtime, donor(runtime, last_name=" "))) == "missing_name"


# --- benefits (§1B) ----------------------------------------------------------------------------------------------


def test_the_relevant_value_test(runtime: Runtime) -> None:
    cases = [
        (10_000, 2_500, "claimable"),  # ≤ £100: 25%
        (10_000, 2_501, "benefit_too_large"),
        (100_000, 7_000, "claimable"),  # > £100: £25 + 5% of the excess = £70
        (100_000, 7_001, "benefit_too_large"),
        (6_000_000, 250_000, "claimable"),  # the £2,500 cap
        (6_000_000, 250_001, "benefit_too_large"),
    ]
    for amount, benefit, expected in cases:
        # A donor each: the aggregate test (per donor and tax year) stays out of the way.
        gift = make_gift(runtime, donor(runtime), amount=amount, benefit_amount=benefit)
        assert code_of(runtime, gift) == expected, (amount, benefit)


def test_gifts_before_april_2019_use_the_old_relevant_value_rule(runtime: Runtime) -> None:
    supporter = donor(runtime, made_on=dt.date(2019, 6, 1))
    old = make_gift(runtime, supporter, amount=50_000, benefit_amount=2_600, received_on=dt.date(2019, 4, 5))
    new = make_gift(runtime, supporter, amount=50_000, benefit_amount=2_600, received_on=dt.date(2019, 4, 6))
    assert code_of(runtime, old, today=dt.date(2022, 1, 1)) == "benefit_too_large"  # £25 flat for £100-£1,000
    assert code_of(runtime, new, today=dt.date(2022, 1, 1)) == "claimable"  # £25 + 5% of £400 = £45
    assert relevant_value_limit(50_000, dt.date(2019, 4, 5)) == 2_500
    assert relevant_value_limit(50_000, dt.date(2019, 4, 6)) == 4_500
    assert relevant_value_limit(10_000_000, dt.date(2010, 1, 1)) == 50_000


def test_benefits_over_2500_in_a_tax_year_fail_the_aggregate_test(runtime: Runtime) -> None:
    supporter = donor(runtime)
    first = make_gift(runtime, supporter, amount=5_000_000, benefit_amount=100_000, received_on=dt.date(2025, 4, 6))
    second = make_gift(runtime, supporter, amount=5_000_000, benefit_amount=100_000, received_on=dt.date(2025, 5, 1))
    third = make_gift(runtime, supporter, amount=5_000_000, benefit_amount=100_000, received_on=dt.date(2025, 6, 1))
    plain = make_gift(runtime, supporter, amount=5_000, received_on=dt.date(2025, 7, 1))
    last_year = make_gift(runtime, supporter, amount=5_000_000, benefit_amount=100_000, received_on=dt.date(2025, 4, 5))
    assert [code_of(runtime, g) for g in (first, second, plain, last_year)] == ["claimable"] * 4
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, third, today=TODAY)
    assert explanation.code == "benefits_over_annual_limit"
    assert "£3,000.00" in explanation.reason


def test_a_benefit_counts_towards_the_annual_limit_whatever_became_of_its_gifts_money(runtime: Runtime) -> None:
    """Found in review: a benefit on a gift refunded later counted towards the £2,500, but one on a gift charged
    back (reversed) did not. A benefit given is given: both count, so a claim never rests on a benefit total lower
    than what the donor received (the cautious reading; an over-claim is the charity's to repay)."""
    for status, returned in ((GiftStatus.PAID, 5_000_000), (GiftStatus.REVERSED, 0)):
        supporter = donor(runtime)
        make_gift(
            runtime,
            supporter,
            amount=5_000_000,
            benefit_amount=200_000,
            status=status,
            returned_amount=returned,
            received_on=dt.date(2025, 4, 10),
        )
        later = make_gift(runtime, supporter, amount=5_000_000, benefit_amount=60_000, received_on=dt.date(2025, 5, 1))
        assert code_of(runtime, later) == "benefits_over_annual_limit", status


# --- rules from settings ----------------------------------------------------------------------------------------


def test_rules_come_from_settings(settings: Settings) -> None:
    rules = rules_from(settings, dt.date(2025, 11, 1))
    assert rules.aggregate_limit == 2000
    assert rules.wait_for_oral_cancellation_window is True
    assert rules.oral_confirmed_before == dt.date(2025, 10, 2)
