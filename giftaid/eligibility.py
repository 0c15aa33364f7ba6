"""Whether a gift is claimable, and why not: the one place the Gift Aid rules (giftaid.md §1, §4) are decided.

The rules are one SQL expression (`eligibility_select`), so the same decision serves one gift
(`giving giftaid explain`), a supporter's totals, and a claim of a million gifts built with INSERT ... SELECT.
Each gift gets a stable reason code (`Code`), or NULL when it can be claimed; `describe` turns a code into words.

Decisions (see docs/giftaid.md):
- A partly refunded gift is claimed on what the donor kept (amount less `returned_amount`).
- The donor's name and address for HMRC come from the declaration that covers the gift (kept as given);
  when several cover it, the one whose address was in force on the gift's date (the newest made on or before it,
  else the first made after it), then the one given with the gift.
- A declaration covers gifts of the four years before it was made at most, whatever its scope, and nothing while
  its date is still to come.
- Benefits: the relevant value test (the rule in force on the gift's date) and the £2,500 a tax year aggregate,
  counted in date order, so the gift that takes a donor over the limit and every later one with a benefit fail.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import ColumnElement, Select

from core.clock import add_years, uk_today
from core.money import format_pence, gift_aid_on
from core.settings import Settings
from crm.models import RECORDING_EVIDENCE, Declaration, DeclarationMethod, DeclarationScope
from crm.validation import UK_POSTCODE_PATTERN
from giftaid.models import Claim, ClaimDonor, ClaimGift
from giftaid.sendable import blank_sql, schedule_blank_candidate_sql, unsendable_words
from payments.models import DonorType, Gift, GiftStatus, money_returned

RELEVANT_VALUE_RULE_FROM = dt.date(2019, 4, 6)
DECLARATION_REACH_YEARS = 4  # a declaration covers gifts of the four years before it was made, at most (§1C rule 11)
BENEFIT_CAP_RAISED_ON = dt.date(2011, 4, 6)
AGGREGATE_BENEFIT_LIMIT = 250_000  # £2,500 a tax year
ORAL_CANCELLATION_DAYS = 30


class Code(StrEnum):
    """Why a gift cannot be claimed. The first eight are the contract's; the rest are ours."""

    MISSING_HOUSE = "missing_house"
    INVALID_POSTCODE = "invalid_postcode"
    NO_DECLARATION = "no_declaration"
    DECLARATION_CANCELLED = "declaration_cancelled"
    ORAL_UNCONFIRMED = "oral_unconfirmed"
    REFUNDED = "refunded"
    OUT_OF_TIME = "out_of_time"
    NOT_A_DONATION = "not_a_donation"
    ALREADY_CLAIMED = "already_claimed"
    NOT_RECEIVED = "not_received"
    FUTURE_DATE = "future_date"
    BEFORE_RECOGNITION = "before_recognition"
    MISSING_NAME = "missing_name"
    BENEFIT_TOO_LARGE = "benefit_too_large"
    BENEFITS_OVER_ANNUAL_LIMIT = "benefits_over_annual_limit"
    NOT_STERLING = "not_sterling"


# A held-back gift's reason starts with one of the contract's eight codes (other systems read them); our finer
# codes fold into the one that says what it means for the claim, and the words after it keep the detail.
CONTRACT_CODE = {
    Code.BENEFIT_TOO_LARGE: Code.NOT_A_DONATION,
    Code.BENEFITS_OVER_ANNUAL_LIMIT: Code.NOT_A_DONATION,
    Code.NOT_STERLING: Code.NOT_A_DONATION,
    Code.NOT_RECEIVED: Code.NOT_A_DONATION,
    Code.FUTURE_DATE: Code.OUT_OF_TIME,
    Code.BEFORE_RECOGNITION: Code.OUT_OF_TIME,
    Code.MISSING_NAME: Code.NO_DECLARATION,
}


@dataclass(frozen=True)
class Rules:
    """The settings and the day a decision is made on."""

    today: dt.date
    recognised_on: dt.date
    financial_year_end: str  # "MM-DD"; "04-05" is the tax year
    aggregate_limit: int
    wait_for_oral_cancellation_window: bool

    @property
    def out_of_time_through(self) -> dt.date:
        """Gifts received on or before this date are past the four-year limit of their financial period."""
        four_years_ago = add_years(self.today, -4)
        month, day = month_day_of(self.financial_year_end)
        end = dt.date(four_years_ago.year, month, day)
        return end if end < four_years_ago else dt.date(four_years_ago.year - 1, month, day)

    @property
    def oral_confirmed_before(self) -> dt.date:
        """An oral declaration's 30-day cancellation window has closed if its confirmation was sent before this."""
        return self.today - dt.timedelta(days=ORAL_CANCELLATION_DAYS)

    def claim_deadline(self, received_on: dt.date) -> dt.date:
        return add_years(period_end(received_on, self.financial_year_end), 4)


def rules_from(settings: Settings, today: dt.date | None = None) -> Rules:
    return Rules(
        today=today or uk_today(),
        recognised_on=settings.charity.recognised_on,
        financial_year_end=settings.charity.financial_year_end,
        aggregate_limit=settings.giftaid.aggregate_limit,
        wait_for_oral_cancellation_window=settings.giftaid.wait_for_oral_cancellation_window,
    )


def month_day_of(text: str) -> tuple[int, int]:
    month, day = text.split("-")
    return int(month), int(day)


def period_end(day: dt.date, financial_year_end: str) -> dt.date:
    """The end of the charity's financial period (tax year or accounting year) a date falls in."""
    month, mday = month_day_of(financial_year_end)
    end = dt.date(day.year, month, mday)
    return end if day <= end else dt.date(day.year + 1, month, mday)


def relevant_value_limit(amount: int, received_on: dt.date) -> int:
    """The most a donor's benefit may be worth for one donation (pence), §1B rule 6."""
    if received_on >= RELEVANT_VALUE_RULE_FROM:
        limit = amount * 25 // 100 if amount <= 10_000 else 2_500 + (amount - 10_000) * 5 // 100
        return min(limit, 250_000)
    if amount <= 10_000:
        limit = amount * 25 // 100
    elif amount <= 100_000:
        limit = 2_500
    else:
        limit = amount * 5 // 100
    return min(limit, 250_000 if received_on >= BENEFIT_CAP_RAISED_ON else 50_000)


# --- SQL -----------------------------------------------------------------------------------------------------------

G = Gift.__table__  # type: ignore[attr-defined]
D = Declaration.__table__  # type: ignore[attr-defined]
CG = ClaimGift.__table__  # type: ignore[attr-defined]
CD = ClaimDonor.__table__  # type: ignore[attr-defined]
C = Claim.__table__  # type: ignore[attr-defined]


def year_and_month_day(column: Any, dialect: str) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """A date's year and its month-day as a number (5 April → 405), cheaply on each database."""
    if dialect == "postgresql":
        # date_part on a date is far cheaper than to_char (which goes through a timestamp with time zone).
        year = sa.cast(sa.func.date_part("year", column), sa.Integer)
        month_day = sa.cast(sa.func.date_part("month", column) * 100 + sa.func.date_part("day", column), sa.Integer)
        return year, month_day
    return sa.cast(sa.func.strftime("%Y", column), sa.Integer), sa.cast(sa.func.strftime("%m%d", column), sa.Integer)


def day_number(column: Any, dialect: str) -> ColumnElement[Any]:
    """A date as a number of days (since 1 January 1900), to sort on as one integer."""
    if dialect == "postgresql":
        return sa.type_coerce(column.op("-")(sa.literal_column("DATE '1900-01-01'")), sa.Integer)
    return sa.cast(sa.func.julianday(column) - 2415020.5, sa.Integer)


def period_year(column: Any, financial_year_end: str, dialect: str) -> ColumnElement[Any]:
    """The calendar year in which a date's financial period ends (tax year: 6 April 2024 → 2025)."""
    year, month_day = year_and_month_day(column, dialect)
    month, day = month_day_of(financial_year_end)
    return year + sa.case((month_day > month * 100 + day, 1), else_=0)


def years_before(column: Any, years: int, dialect: str) -> ColumnElement[Any]:
    """The same day `years` earlier, in SQL: for four years, the day crm's `add_years` gives (a 29 February has a
    29 February four years before it until 2100)."""
    if dialect == "postgresql":
        return sa.cast(column.op("-")(sa.literal_column(f"INTERVAL '{years} years'")), sa.Date)
    return sa.func.date(column, f"-{years} years")


def _benefit_fails(amount: Any, benefit: Any, on: Any) -> ColumnElement[Any]:
    """The relevant value test in SQL (integer pence, compared times 100 so nothing is rounded)."""
    new_rule = sa.or_(
        benefit > 250_000,
        sa.and_(amount <= 10_000, benefit * 100 > amount * 25),
        sa.and_(amount > 10_000, benefit * 100 > 250_000 + (amount - 10_000) * 5),
    )
    old_rule = sa.or_(
        sa.and_(on >= BENEFIT_CAP_RAISED_ON, benefit > 250_000),
        sa.and_(on < BENEFIT_CAP_RAISED_ON, benefit > 50_000),
        sa.and_(amount <= 10_000, benefit * 100 > amount * 25),
        sa.and_(amount > 10_000, amount <= 100_000, benefit > 2_500),
        sa.and_(amount > 100_000, benefit * 100 > amount * 5),
    )
    return sa.and_(benefit > 0, sa.case((on >= RELEVANT_VALUE_RULE_FROM, new_rule), else_=old_rule))  # type: ignore[return-value]


def _declarations(
    rules: Rules, dialect: str, *, shared: bool = False, of_supporters: ColumnElement[bool] | None = None
) -> Any:
    """Each declaration with what does not depend on the gift worked out once: whether it is effective (an oral one
    needs its written confirmation, and by default its 30-day window closed, or a recording, which by default also
    waits out the window of a letter sent) and whether its donor details are fit for HMRC. A supporter has far fewer
    declarations than gifts.

    `shared`: a CTE, worked out once for both halves of the query (over every declaration, for a claim), rather
    than a subquery each half works out again. `of_supporters`: only the declarations of the supporters in scope
    (a few gifts or supporters), so counting each supporter's declarations reads theirs, not every one."""
    confirmed = D.c.confirmation_sent_on.is_not(None)
    recorded = D.c.evidence[RECORDING_EVIDENCE].as_string().is_not(None)
    if rules.wait_for_oral_cancellation_window:
        confirmed = sa.and_(confirmed, D.c.confirmation_sent_on < rules.oral_confirmed_before)
        # A written record opens 30 days in which a cancellation voids the declaration, recording or not (§1C rule
        # 13, crm's `_oral_void`): those are waited out too. A recording without a letter opens none.
        recorded = sa.and_(recorded, D.c.confirmation_sent_on.is_(None))
    effective = sa.or_(D.c.method != DeclarationMethod.ORAL.value, confirmed, recorded)
    postcode_ok = sa.or_(D.c.non_uk.is_(True), sa.func.coalesce(D.c.postcode, "").regexp_match(UK_POSTCODE_PATTERN))
    # Blank: nothing but spaces, once the characters no file can hold are dropped (giftaid.sendable).
    details = sa.case(
        (blank_sql(D.c.house, dialect), Code.MISSING_HOUSE.value),
        (sa.not_(postcode_ok), Code.INVALID_POSTCODE.value),
        (sa.or_(blank_sql(D.c.first_name, dialect), blank_sql(D.c.last_name, dialect)), Code.MISSING_NAME.value),
        else_=sa.null(),
    )
    query = sa.select(
        D.c.id,
        D.c.supporter_id,
        D.c.scope,
        D.c.made_on,
        # However it is scoped (one named gift, or given with a gift, too), a declaration reaches back four years.
        years_before(D.c.made_on, DECLARATION_REACH_YEARS, dialect).label("reaches_back_to"),
        D.c.start,
        D.c.end,
        D.c.gift_id,
        D.c.voided,
        D.c.cancellation_effective_on,
        D.c.confirmation_sent_on,
        D.c.method,
        D.c.title,
        D.c.first_name,
        D.c.last_name,
        D.c.house,
        D.c.postcode,
        D.c.non_uk,
        sa.case((effective, 1), else_=0).label("effective"),
        details.label("details_code"),
        sa.func.count().over(partition_by=D.c.supporter_id).label("siblings"),
    )
    if of_supporters is not None:
        query = query.where(of_supporters)
    return query.cte("decl") if shared else query.subquery("decl")


def _declaration_rank(decl: Any, today: dt.date) -> ColumnElement[Any]:
    """0 the declaration makes the gift claimable; 1 oral, not yet effective; 2 cancelled or void for this gift;
    3 it does not cover the gift at all (nor does one dated after `today`: it is made on or before the claim, §4)."""
    on = G.c.received_on
    covers = sa.and_(
        decl.c.made_on <= today,
        on >= decl.c.reaches_back_to,
        sa.or_(
            sa.and_(G.c.declaration_id.is_not(None), decl.c.id == G.c.declaration_id),
            sa.and_(decl.c.scope == DeclarationScope.THIS_GIFT.value, decl.c.gift_id == G.c.id),
            sa.and_(decl.c.scope == DeclarationScope.FUTURE.value, on >= decl.c.made_on),
            sa.and_(
                decl.c.scope == DeclarationScope.PAST_4_YEARS_AND_FUTURE.value,
                on >= sa.func.coalesce(decl.c.start, decl.c.made_on),
            ),
            sa.and_(decl.c.scope == DeclarationScope.PERIOD.value, on >= decl.c.start, on <= decl.c.end),
        ),
    )
    cancelled = sa.or_(
        decl.c.voided.is_(True),
        sa.and_(decl.c.cancellation_effective_on.is_not(None), on >= decl.c.cancellation_effective_on),
    )
    # Written so that a NULL comparison (no gift declaration id, no period end) means "does not cover".
    return sa.case((covers, sa.case((cancelled, 2), (decl.c.effective == 1, 0), else_=1)), else_=3)


def _benefit_totals(dialect: str, supporter_filter: ColumnElement[Any] | None) -> Any:
    """Benefits a donor received in a tax year, counted in date order (only gifts that carry a benefit). A benefit
    given is counted whatever became of the gift's money later (refunded or charged back): the cautious reading, so
    a claim never rests on a total lower than what the donor received."""
    tax_year = period_year(G.c.received_on, "04-05", dialect)
    query = sa.select(
        G.c.id.label("gift_id"),
        sa.func.sum(G.c.benefit_amount)
        .over(
            partition_by=(G.c.supporter_id, tax_year),
            order_by=(G.c.received_on, G.c.received_at, G.c.id),
        )
        .label("benefits_so_far"),
    ).where(
        G.c.benefit_amount > 0,
        G.c.status.in_((GiftStatus.PAID.value, GiftStatus.REVERSED.value)),
        G.c.received_on.is_not(None),
    )
    if supporter_filter is not None:
        query = query.where(supporter_filter)
    return query.subquery("benefits")


def eligibility_select(
    rules: Rules,
    dialect: str,
    *,
    through: dt.date | None = None,
    gift_ids: Iterable[uuid.UUID] | None = None,
    supporter_ids: Iterable[uuid.UUID] | None = None,
    unclaimed_only: bool = True,
    detail: bool = True,
) -> Select[Any]:
    """Every gift in scope with its reason code (`code`, NULL when claimable) and what a claim line needs.

    By default the gifts in scope are those received (paid or since reversed) on or before `through` that are in
    no live claim; naming `gift_ids` looks at those gifts whatever their state. Without `detail`, only what a claim
    line needs (the words of a reason need the rest)."""
    filters: list[ColumnElement[Any]] = []
    if gift_ids is not None:
        filters.append(G.c.id.in_(list(gift_ids)))
    else:
        filters.append(G.c.status.in_([GiftStatus.PAID.value, GiftStatus.REVERSED.value]))
        filters.append(G.c.received_on.is_not(None))
    if through is not None:
        filters.append(G.c.received_on <= through)
    supporter_filter = None
    if supporter_ids is not None:
        supporter_filter = G.c.supporter_id.in_(list(supporter_ids))
        filters.append(supporter_filter)
    gift_filter = sa.and_(*filters)

    # Over every gift (a claim, the dashboard) the declarations are worked out once for both halves; for a few
    # gifts or supporters a subquery lets the planner look at their declarations only.
    of_supporters = benefits_of = None
    if supporter_ids is not None:
        of_supporters = D.c.supporter_id.in_(list(supporter_ids))
    elif gift_ids is not None:
        named = G.alias("named_gifts")
        their_supporters = sa.select(named.c.supporter_id).where(named.c.id.in_(list(gift_ids)))
        of_supporters = D.c.supporter_id.in_(their_supporters)
        benefits_of = G.c.supporter_id.in_(their_supporters)
    decl = _declarations(rules, dialect, shared=gift_ids is None and supporter_ids is None, of_supporters=of_supporters)
    returned = money_returned()
    # Every (gift, declaration of its supporter) pair, the best declaration first: one scan of the gifts, one hash
    # join, one sort. A gift with no declaration at all keeps one row (rank 3).
    rank = _declaration_rank(decl, rules.today)
    columns = [
        G.c.id.label("gift_id"),
        G.c.supporter_id,
        G.c.received_on,
        G.c.status,
        G.c.donor_type,
        G.c.currency,
        G.c.amount,
        G.c.benefit_amount,
        returned.label("returned"),
        decl.c.id.label("declaration_id"),
        decl.c.details_code,
        *(
            [
                decl.c.title,
                decl.c.first_name,
                decl.c.last_name,
                decl.c.house,
                decl.c.postcode,
                decl.c.non_uk,
                decl.c.method,
                decl.c.confirmation_sent_on,
                decl.c.cancellation_effective_on,
                decl.c.voided,
            ]
            if detail
            else []
        ),
        rank.label("rank"),
    ]
    # Each gift with its supporter's best declaration. Most supporters have one declaration (or none): their gifts
    # need no choosing, so only the gifts of supporters with several go through the window (a sort).
    only_one = (
        sa.select(*columns, sa.literal(1).label("pick"))
        .select_from(G.outerjoin(decl, decl.c.supporter_id == G.c.supporter_id))
        .where(gift_filter, sa.func.coalesce(decl.c.siblings, 1) == 1)
    )
    several = (
        sa.select(
            *columns,
            sa.func.row_number()
            .over(
                partition_by=G.c.id,
                order_by=(
                    rank,
                    # The donor's address in force on the gift's date (§1C rule 15): the newest declaration made on
                    # or before it, else the first made after it (reaching back); one key, as day numbers.
                    sa.case(
                        (decl.c.made_on <= G.c.received_on, -day_number(decl.c.made_on, dialect)),
                        else_=day_number(decl.c.made_on, dialect),
                    ),
                    sa.case((decl.c.id == G.c.declaration_id, 0), else_=1),
                    decl.c.id,
                ),
            )
            .label("pick"),
        )
        .select_from(G.join(decl, decl.c.supporter_id == G.c.supporter_id))
        .where(gift_filter, decl.c.siblings > 1)
    )
    pairs = sa.union_all(only_one, several).subquery("pairs")
    P = pairs.c
    benefits = _benefit_totals(dialect, supporter_filter if supporter_filter is not None else benefits_of)
    live = (
        sa.select(CG.c.gift_id, CG.c.claim_id, C.c.status.label("claim_status"), CG.c.line_no.label("claimed_line"))
        .select_from(CG.join(C, C.c.id == CG.c.claim_id))
        .where(CG.c.live.is_(True))
        .subquery("live")
    )
    on = P.received_on
    code = sa.case(
        (live.c.gift_id.is_not(None), Code.ALREADY_CLAIMED.value),
        (P.status.not_in([GiftStatus.PAID.value, GiftStatus.REVERSED.value]), Code.NOT_RECEIVED.value),
        (on.is_(None), Code.NOT_RECEIVED.value),
        (P.donor_type != DonorType.INDIVIDUAL.value, Code.NOT_A_DONATION.value),
        (P.returned >= P.amount, Code.REFUNDED.value),
        (P.currency != "GBP", Code.NOT_STERLING.value),
        (on > rules.today, Code.FUTURE_DATE.value),
        (on < rules.recognised_on, Code.BEFORE_RECOGNITION.value),
        (on <= rules.out_of_time_through, Code.OUT_OF_TIME.value),
        # Before the declaration's checks: no declaration can mend a benefit too large, so a receipt must neither
        # invite one nor promise a claim. The donation is what the donor kept (a partly refunded gift is claimed on
        # the rest), so the benefit is weighed against that.
        (_benefit_fails(P.amount - P.returned, P.benefit_amount, on), Code.BENEFIT_TOO_LARGE.value),
        (
            sa.func.coalesce(benefits.c.benefits_so_far, 0) > AGGREGATE_BENEFIT_LIMIT,
            Code.BENEFITS_OVER_ANNUAL_LIMIT.value,
        ),
        (P.rank == 3, Code.NO_DECLARATION.value),
        (P.rank == 2, Code.DECLARATION_CANCELLED.value),
        (P.rank == 1, Code.ORAL_UNCONFIRMED.value),
        (P.details_code.is_not(None), P.details_code),
        else_=sa.null(),
    )
    # A claim reads the donor's details from the declaration when it writes its lines: the gifts go through the
    # claim's sorts as narrow rows.
    claim_columns = [
        P.gift_id,
        P.supporter_id,
        P.received_on,
        P.returned,
        (P.amount - P.returned).label("claim_amount"),
        P.declaration_id,
        period_year(on, rules.financial_year_end, dialect).label("period_year"),
        code.label("code"),
    ]
    detail_columns = (
        []
        if not detail
        else [
            P.title,
            P.first_name,
            P.last_name,
            P.house,
            P.postcode,
            sa.func.coalesce(P.non_uk, False).label("overseas"),
            P.status,
            P.donor_type,
            P.currency,
            P.amount,
            P.benefit_amount,
            benefits.c.benefits_so_far,
            P.method.label("declaration_method"),
            P.confirmation_sent_on,
            P.cancellation_effective_on,
            P.voided,
            # 0: the declaration picked covers the gift and is in force; with `details_code` NULL, it is one a
            # claim may rely on (whatever the gift's other checks say).
            P.rank.label("declaration_rank"),
            P.details_code,
            # Whether the schedule may show the name or house as nothing, even transliterated: no SQL can tell, so
            # Python confirms for these few rows (`service.final_code`), as a claim build does for its donors.
            sa.or_(
                schedule_blank_candidate_sql(P.first_name, dialect),
                schedule_blank_candidate_sql(P.last_name, dialect),
                schedule_blank_candidate_sql(P.house, dialect),
            ).label("maybe_schedule_blank"),
            live.c.claim_id.label("claimed_in"),
            live.c.claim_status,
            live.c.claimed_line,
        ]
    )
    query = (
        sa.select(*claim_columns, *detail_columns)
        .select_from(
            pairs.outerjoin(benefits, benefits.c.gift_id == P.gift_id).outerjoin(live, live.c.gift_id == P.gift_id)
        )
        .where(P.pick == 1)
    )
    if unclaimed_only and gift_ids is None:
        query = query.where(live.c.gift_id.is_(None))
    return query


# --- words -----------------------------------------------------------------------------------------------------------


def _date(day: dt.date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else "an unknown date"


def describe(code: str | None, row: Any, rules: Rules) -> str:
    """The reason in words, after its code (`"no_declaration: ..."`), or why the gift can be claimed."""
    on = row.received_on
    kept = int(row.amount) - int(row.returned or 0)  # the donation: what the donor kept
    if code is None:
        amount = format_pence(int(row.claim_amount))
        deadline = rules.claim_deadline(on)
        partly = f" (what the donor kept after {format_pence(int(row.returned))} was returned)" if row.returned else ""
        return (
            f"claimable: a gift of {amount}{partly} received on {_date(on)}, covered by declaration "
            f"{row.declaration_id}; Gift Aid {format_pence(gift_aid_on(int(row.claim_amount)))}; "
            f"claim it by {_date(deadline)}"
        )
    words = {
        Code.ALREADY_CLAIMED: lambda: (
            # Line 0: taken off a claim HMRC may hold as it was first sent or handed out (repository.OFF_THE_LINES).
            f"taken off claim {row.claimed_in} ({row.claim_status}), which HMRC may hold with it as first sent or "
            "handed out: claimed again only once that claim is rejected or sent again (--again)"
            if getattr(row, "claimed_line", None) == 0
            else f"already in claim {row.claimed_in} ({row.claim_status})"
        ),
        Code.NOT_RECEIVED: lambda: f"the money has not been received (the gift is {row.status})",
        Code.NOT_A_DONATION: lambda: "a gift from a company, not an individual's own money",
        Code.REFUNDED: lambda: (
            "the gift was reversed (charged back or failed after payment)"
            if row.status == GiftStatus.REVERSED.value
            else f"all of it was refunded ({format_pence(int(row.returned))})"
        ),
        Code.NOT_STERLING: lambda: f"the gift is in {row.currency}; HMRC claims are in pounds",
        Code.FUTURE_DATE: lambda: f"Gift Aid donation date cannot be in the future ({_date(on)})",
        Code.BEFORE_RECOGNITION: lambda: (
            f"received on {_date(on)}, before HMRC recognised the charity on {_date(rules.recognised_on)}"
        ),
        Code.OUT_OF_TIME: lambda: (
            f"received on {_date(on)}; the four-year limit for its financial period ended on "
            f"{_date(rules.claim_deadline(on))}"
        ),
        Code.NO_DECLARATION: lambda: f"no Gift Aid declaration covers a gift received on {_date(on)}",
        Code.DECLARATION_CANCELLED: lambda: (
            (
                f"declaration {row.declaration_id} was cancelled within 30 days of its written confirmation, so it"
                " is void"
                if row.confirmation_sent_on is not None
                else f"declaration {row.declaration_id} was oral and cancelled before any written confirmation was"
                " sent, so it never took effect"
            )
            if row.voided
            else f"declaration {row.declaration_id} was cancelled from {_date(row.cancellation_effective_on)}"
        ),
        Code.ORAL_UNCONFIRMED: lambda: (
            f"oral declaration {row.declaration_id} has had no written confirmation sent"
            if row.confirmation_sent_on is None
            else (
                f"oral declaration {row.declaration_id} was confirmed on {_date(row.confirmation_sent_on)}; "
                f"its 30-day cancellation window closes after "
                f"{_date(row.confirmation_sent_on + dt.timedelta(days=ORAL_CANCELLATION_DAYS))}"
            )
        ),
        Code.MISSING_HOUSE: lambda: (
            "the declaration has no house name or number" + unsendable_words(getattr(row, "house", None))
        ),
        Code.INVALID_POSTCODE: lambda: (
            f"{row.postcode!r} is not a UK postcode in HMRC's format (non-UK donors are marked non-UK)"
            if row.postcode
            else "the declaration has no UK postcode"
        ),
        Code.MISSING_NAME: lambda: (
            "the declaration lacks the donor's first or last name"
            + unsendable_words(getattr(row, "first_name", None), getattr(row, "last_name", None))
        ),
        Code.BENEFIT_TOO_LARGE: lambda: (
            f"the donor's benefit ({format_pence(int(row.benefit_amount))}) is worth more than the "
            f"{format_pence(relevant_value_limit(kept, on))} allowed for a gift of {format_pence(kept)}"
        ),
        Code.BENEFITS_OVER_ANNUAL_LIMIT: lambda: (
            f"benefits to this donor in the tax year come to {format_pence(int(row.benefits_so_far or 0))}, "
            f"over the {format_pence(AGGREGATE_BENEFIT_LIMIT)} limit"
        ),
    }
    return f"{code}: {words[Code(code)]()}"


def held_back_reason(code: str, row: Any, rules: Rules) -> str:
    """A held-back gift's reason: the contract's code, then the words (with our finer code when it was folded)."""
    contract = CONTRACT_CODE.get(Code(code), Code(code))
    words = describe(code, row, rules).split(": ", 1)[1]
    return f"{contract}: {words}" if contract == code else f"{contract}: {code.replace('_', ' ')}: {words}"


@dataclass(frozen=True)
class Explanation:
    gift_id: uuid.UUID
    claimable: bool
    code: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"gift_id": str(self.gift_id), "claimable": self.claimable, "code": self.code, "reason": self.reason}
