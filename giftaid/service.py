"""Use cases of giftaid. Never commits: the caller's unit of work does.

- `build_claim`: claims every claimable gift received on or before a date, at once (a gift is in at most one live
  claim: a unique constraint), lists the others with their reason, and carries pending adjustments.
- `write_claim_files` / `schedule_part` / `write_xml_part`: HMRC's schedule(s) and Charities Online message(s),
  checked by our validator (schedules) and HMRC's business rules (XML) before they are handed out.
- `change_status`, `submit_claim`, `poll_claim`: built → submitted → accepted | rejected → paid, who and when.
- `explain`, `eligibility_snapshot`, `changed_eligibility`, `settings_changes`, `cancel_declaration`,
  `confirm_declaration`: why a gift can or cannot be claimed, and which gifts a change affects.
- `supporter_totals`, `reassign_supporter`: what crm's supporter pages and merges need.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import logging
import os
import re
import tempfile
import time
import types
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col

from core.clock import uk_today, utc_now
from core.db import UnitOfWork
from core.money import Money, gift_aid_on
from core.settings import Settings
from crm import service as crm_service
from crm.models import Declaration
from giftaid import repository, schedule, validator
from giftaid import xml as claim_xml
from giftaid.eligibility import (
    Code,
    Explanation,
    Rules,
    describe,
    eligibility_select,
    held_back_reason,
    rules_from,
)
from giftaid.errors import (
    ClaimConflict,
    ClaimNotFound,
    ClaimRejected,
    ClaimsBusy,
    DeclarationNotFound,
    ExportFailed,
    GiftNotFound,
    InvalidClaimRequest,
    InvalidTransition,
    NothingLeftToSend,
    SubmissionFailed,
)
from giftaid.govtalk import GatewayError, GovTalkClient, Reply
from giftaid.models import Adjustment, AdjustmentReason, Claim, ClaimEvent, ClaimStatus, Message
from giftaid.sendable import schedule_blank
from payments.models import Gift, Order

log = logging.getLogger("giving.giftaid")

Format = Literal["ods", "xml", "both"]
TRANSITIONS: dict[ClaimStatus, set[ClaimStatus]] = {
    ClaimStatus.BUILT: {ClaimStatus.SUBMITTED, ClaimStatus.REJECTED},
    ClaimStatus.SUBMITTED: {ClaimStatus.ACCEPTED, ClaimStatus.REJECTED},
    ClaimStatus.ACCEPTED: {ClaimStatus.PAID},
    ClaimStatus.REJECTED: set(),
    ClaimStatus.PAID: set(),
}


# --- results ---------------------------------------------------------------------------------------------------------


@dataclass
class HeldBackGift:
    gift_id: uuid.UUID
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"gift_id": str(self.gift_id), "reason": self.reason}


@dataclass
class ClaimResult:
    """What `giving giftaid claim --json` prints (contract.md) and POST /api/giftaid/claims answers."""

    claim_id: uuid.UUID | None
    lines: int = 0
    gifts: int = 0
    total: int = 0
    gift_aid: int = 0
    adjustment: int = 0
    held_back: list[HeldBackGift] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "claim_id": str(self.claim_id) if self.claim_id else None,
            "lines": self.lines,
            "total": Money(self.total).to_json(),
            "gift_aid": Money(self.gift_aid).to_json(),
            "adjustment": Money(self.adjustment).to_json(),
            "held_back": [h.to_json() for h in self.held_back],
            "files": self.files,
        }


@dataclass(frozen=True)
class EligibilityChange:
    gift_id: uuid.UUID
    before: str | None  # the code before (None: claimable)
    after: str | None

    @property
    def now_claimable(self) -> bool:
        return self.after is None

    def to_json(self) -> dict[str, Any]:
        return {"gift_id": str(self.gift_id), "before": self.before or "claimable", "after": self.after or "claimable"}


@dataclass
class DeclarationChange:
    declaration_id: uuid.UUID
    changed: list[EligibilityChange]
    adjusted_gift_ids: list[uuid.UUID] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "declaration_id": str(self.declaration_id),
            "changed": [c.to_json() for c in self.changed],
            "adjusted_gift_ids": [str(g) for g in self.adjusted_gift_ids],
        }


# --- eligibility -----------------------------------------------------------------------------------------------------


def explain(session: Session, settings: Settings, gift_id: uuid.UUID, *, today: dt.date | None = None) -> Explanation:
    """Whether and why one gift can be claimed, in words (the same rules a claim applies)."""
    rules = rules_from(settings, today)
    row = session.execute(
        eligibility_select(rules, repository.dialect_of(session), gift_ids=[gift_id], unclaimed_only=False)
    ).first()
    if row is None:
        if session.get(Order, gift_id) is not None:
            return Explanation(
                gift_id,
                False,
                Code.NOT_A_DONATION.value,
                f"{Code.NOT_A_DONATION}: a shop order is a sale, never a gift",
            )
        raise GiftNotFound(f"no gift {gift_id}")
    code = final_code(row)
    return Explanation(gift_id, code is None, code, describe(code, row, rules))


def _schedule_blank_code(donor: Any) -> str | None:
    """`missing_house` / `missing_name` for a donor whose house or name HMRC's schedule shows as nothing, even
    transliterated (giftaid.sendable): no SQL can tell, so the eligibility says claimable and a claim holds the gifts
    back when it finds them among its donor rows (`_hold_back_schedule_blank`)."""
    if schedule_blank(donor.house):
        return Code.MISSING_HOUSE.value
    if schedule_blank(donor.first_name) or schedule_blank(donor.last_name):
        return Code.MISSING_NAME.value
    return None


def final_code(row: Any) -> str | None:
    """A row of `eligibility_select` (with its details) → its code as a claim build decides it: the SQL's code, or
    for a gift it finds claimable whose donor's name or house the schedule may show as nothing (the few rows with
    `maybe_schedule_blank`), `missing_name` / `missing_house` when Python confirms it (`_schedule_blank_code`), as
    the build holds such a donor's gifts back (`_hold_back_schedule_blank`). So counts of what is claimable agree
    with what a claim claims."""
    if row.code is not None or not row.maybe_schedule_blank:
        return row.code  # type: ignore[no-any-return]
    return _schedule_blank_code(row)


def unshown_claimable(session: Session, rules: Rules) -> list[tuple[Any, str]]:
    """The unclaimed gifts the eligibility's SQL finds claimable that a claim build would hold back, the schedule
    showing their donor's name or house as nothing (`final_code`), each with that code: the few rows whose name or
    house may be such are read (a first-character test in SQL), Python confirms. For counts made in SQL (the
    dashboard) to agree with the build."""
    scope = eligibility_select(rules, repository.dialect_of(session)).subquery("unshown")
    rows = session.execute(sa.select(scope).where(scope.c.code.is_(None), scope.c.maybe_schedule_blank.is_(True)))
    return [(row, code) for row in rows if (code := final_code(row)) is not None]


def eligibility_snapshot(
    session: Session,
    rules: Rules,
    *,
    supporter_ids: Iterable[uuid.UUID] | None = None,
    through: dt.date | None = None,
) -> dict[uuid.UUID, str | None]:
    """Every unclaimed received gift (of these supporters) → its reason code, None when claimable."""
    query = eligibility_select(
        rules,
        repository.dialect_of(session),
        supporter_ids=list(supporter_ids) if supporter_ids is not None else None,
        through=through,
    ).execution_options(stream_results=True, yield_per=10_000)
    return {row.gift_id: final_code(row) for row in session.execute(query)}


def changed_eligibility(
    before: dict[uuid.UUID, str | None], after: dict[uuid.UUID, str | None]
) -> list[EligibilityChange]:
    """The gifts whose claimability changed between two snapshots (claimable ↔ not, or a different reason)."""
    changes = []
    for gift_id in sorted(before.keys() | after.keys()):
        was, now = before.get(gift_id), after.get(gift_id)
        if gift_id in before and gift_id in after and was == now:
            continue
        if gift_id not in before or gift_id not in after:
            # Appeared (received) or left (claimed): not a change of eligibility.
            continue
        changes.append(EligibilityChange(gift_id, was, now))
    return changes


def settings_changes(
    session: Session, before: Settings, after: Settings, *, today: dt.date | None = None
) -> list[EligibilityChange]:
    """Which unclaimed gifts a change of settings would make claimable or not."""
    return changed_eligibility(
        eligibility_snapshot(session, rules_from(before, today)),
        eligibility_snapshot(session, rules_from(after, today)),
    )


def cancel_declaration(
    uow: UnitOfWork,
    settings: Settings,
    declaration_id: uuid.UUID,
    *,
    effective_on: dt.date,
    reason: str = "",
    actor: str,
    today: dt.date | None = None,
) -> DeclarationChange:
    """Cancel a declaration (crm's rules: from `effective_on`; an oral one cancelled within 30 days of its written
    confirmation is void) and say which gifts that changed. Gifts already claimed under a void declaration get
    adjustments, carried by the next claim."""
    finish = _declaration_change(uow, rules_from(settings, today), _supporter_of(uow.session, declaration_id))
    return finish(
        crm_service.cancel_declaration(uow, declaration_id, effective_on=effective_on, reason=reason, by=actor)
    )


def confirm_declaration(
    uow: UnitOfWork,
    settings: Settings,
    declaration_id: uuid.UUID,
    *,
    confirmation_sent_on: dt.date,
    actor: str,
    today: dt.date | None = None,
) -> DeclarationChange:
    """Record that an oral declaration's written confirmation was sent, and say which gifts that makes claimable
    (at once, or only once its 30-day window has closed, with `[giftaid] wait_for_oral_cancellation_window`)."""
    finish = _declaration_change(uow, rules_from(settings, today), _supporter_of(uow.session, declaration_id))
    return finish(
        crm_service.confirm_oral_declaration(uow, declaration_id, confirmation_sent_on=confirmation_sent_on, by=actor)
    )


def watch_declarations(uow: UnitOfWork, supporter_id: uuid.UUID) -> Callable[[Declaration], dict[str, Any]]:
    """Registered with crm (`crm.service.register_declaration_watcher`), so its declaration endpoints say which
    gifts a new, cancelled or confirmed declaration changed, under the running settings' rules."""
    from core.runtime import get_runtime

    finish = _declaration_change(uow, rules_from(get_runtime().settings), supporter_id)
    return lambda declaration: {
        key: value for key, value in finish(declaration).to_json().items() if key != "declaration_id"
    }


def _declaration_change(
    uow: UnitOfWork, rules: Rules, supporter_id: uuid.UUID
) -> Callable[[Declaration], DeclarationChange]:
    """The supporter's gifts' claimability now; the returned function, given the declaration once changed, compares
    and, for a declaration made void, records the adjustments its claimed gifts need."""
    before = eligibility_snapshot(uow.session, rules, supporter_ids=[supporter_id])

    def finish(declaration: Declaration) -> DeclarationChange:
        after = eligibility_snapshot(uow.session, rules, supporter_ids=[supporter_id])
        adjusted = detect_adjustments(uow, rules) if declaration.voided else []
        # The search finds every adjustment due (another supporter's refund too): name only what this voiding took
        # back, the supporter's gifts claimed under a void declaration.
        voided = [a.gift_id for a in adjusted if a.reason == AdjustmentReason.DECLARATION_VOIDED]
        theirs = _gifts_of(uow.session, supporter_id, voided)
        return DeclarationChange(
            declaration.id, changed_eligibility(before, after), [gift for gift in voided if gift in theirs]
        )

    return finish


def _gifts_of(session: Session, supporter_id: uuid.UUID, gift_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these gifts are the supporter's."""
    if not gift_ids:
        return set()
    query = sa.select(col(Gift.id)).where(col(Gift.id).in_(gift_ids), col(Gift.supporter_id) == supporter_id)
    return set(session.execute(query).scalars())


def _supporter_of(session: Session, declaration_id: uuid.UUID) -> uuid.UUID:
    declaration = session.get(Declaration, declaration_id)
    if declaration is None:
        raise DeclarationNotFound(f"no declaration {declaration_id}")
    return declaration.supporter_id


# --- supporters ------------------------------------------------------------------------------------------------------


def supporter_totals(
    session: Session, supporter_ids: list[uuid.UUID], settings: Settings | None = None
) -> dict[str, Money]:
    """Gift Aid (the tax, 25%) these supporters' gifts could still be claimed on, and what has been claimed
    (less adjustments)."""
    if not supporter_ids:
        return {"gift_aid_claimable": Money(0), "gift_aid_claimed": Money(0)}
    rules = rules_from(settings or _current_settings())
    query = eligibility_select(rules, repository.dialect_of(session), supporter_ids=supporter_ids)
    claimable = sum(int(row.claim_amount) for row in session.execute(query) if final_code(row) is None)
    claimed, adjusted = repository.claimed_totals(session, supporter_ids)
    return {
        "gift_aid_claimable": Money(gift_aid_on(claimable)),
        "gift_aid_claimed": Money(max(gift_aid_on(claimed) - adjusted, 0)),
    }


def _current_settings() -> Settings:
    """The running process's settings (crm calls `supporter_totals(session, ids)` without them)."""
    from core.runtime import get_runtime
    from core.settings import get_settings

    try:
        return get_runtime().settings
    except RuntimeError:
        return get_settings()


def reassign_supporter(uow: UnitOfWork, from_id: uuid.UUID, to_id: uuid.UUID) -> dict[str, int]:
    """Merges: giftaid's tables hold no supporter ids (they follow gifts and declarations), so nothing moves."""
    return {}


# --- adjustments -----------------------------------------------------------------------------------------------------


def detect_adjustments(uow: UnitOfWork, rules: Rules) -> list[Adjustment]:
    """Money returned on claimed gifts (refund, chargeback, lost dispute), and gifts whose oral declaration was
    voided, become adjustments: the Gift Aid claimed on that money, taken back by the next claim. A gift whose
    voided declaration is not its only one stays claimed when another declaration of the donor, in force, covers it
    (the void one is treated as never made, giftaid.md §1C rule 13; the others still stand).

    Under the claims' lock: a declaration voided while a claim is built would otherwise search at the same moment,
    neither seeing the other's adjustment, and take the same money back twice."""
    session = uow.session
    repository.lock_claims(session)
    _money_back_after_adjustment(uow)
    found = []
    adjusted = []
    rows = repository.returned_since_claim(session)
    still_covered = _covered_by_another_declaration(session, rules, [row.gift_id for row in rows if row.voided])
    for row in rows:
        already = int(row.adjusted_returned)
        # A void declaration another one still covers takes nothing back; money returned on the gift still does.
        if row.voided and row.gift_id not in still_covered:
            money_back = int(row.amount) - already
            reason = AdjustmentReason.DECLARATION_VOIDED
            detail = "declaration void (cancelled within 30 days)"
        else:
            newly = int(row.returned_now) - int(row.returned_at_claim) - already
            money_back = min(newly, int(row.amount) - already)
            reason = AdjustmentReason.REFUND
            detail = "reversed" if row.status == "reversed" else "refunded"
        if money_back <= 0:
            continue
        adjustment = Adjustment(
            gift_id=row.gift_id,
            claim_id=row.claim_id,
            reason=reason,
            returned_amount=money_back,
            amount=gift_aid_on(money_back),
            detail=f"{detail}: {Money(money_back).plain()} of a gift claimed in claim {row.claim_id}",
        )
        found.append(adjustment)
        adjusted.append((row.claim_id, row.gift_id, already + money_back))
    session.add_all(found)
    repository.mark_adjusted(session, adjusted)
    session.flush()
    return found


_MONEY_BACK = "the money came back to the charity (a dispute won on appeal, or a chargeback cancelled)"


def _money_back_after_adjustment(uow: UnitOfWork) -> None:
    """Adjustments that took back more than the gift now has returned since its claim: the money came back (a
    dispute won on appeal, a chargeback cancelled; payments then counts the gift as given again). What HMRC does not
    have yet is withdrawn, newest first: an adjustment no claim carries, or one a claim HMRC cannot have carries
    (`hmrc_may_have`: it comes off that claim, whose history says so). If that withdraws more than came back, the
    search that follows takes the rest back again as a new adjustment.

    What HMRC has or may have (the deduction went in a sent claim, or one whose submission got no answer) cannot be
    undone by a negative adjustment (HMRC's schema allows none): HMRC's way of putting right an under-claim is to claim
    the donation in a later claim. So when HMRC's deductions took back all that was claimed on the gift, the gift is
    released from its claim (whose row stays, as what was sent) and the next claim claims it again on what the donor
    kept; those adjustments are withdrawn as claimed again. When they took back only part of it, no claim line can say
    so: finance is told once, on the claim that carried the deduction, how much Gift Aid HMRC owes."""
    session = uow.session
    now = utc_now()
    rows = repository.standing_adjustments(session)
    adjusted: list[tuple[uuid.UUID, uuid.UUID, int]] = []
    for (claim_id, gift_id), group in itertools.groupby(rows, key=lambda r: (r[0].claim_id, r[0].gift_id)):
        found = list(group)
        first = found[0]
        adjustments = [row[0] for row in found]
        if any(a.reason != AdjustmentReason.REFUND for a in adjustments):
            continue  # a void declaration takes the whole gift back, whatever became of its money
        kept_back = max(0, int(first.returned_now) - int(first.returned_at_claim))
        excess = sum(a.returned_amount for a in adjustments) - kept_back
        if excess <= 0:
            continue
        carriers = {
            a.applied_claim_id: repository.get_claim(session, a.applied_claim_id, for_update=True)
            for a in adjustments
            if a.applied_claim_id is not None
        }

        unsent = [
            a
            for a in adjustments
            if (carrier := carriers.get(a.applied_claim_id)) is None or not hmrc_may_have(carrier)
        ]
        adjusted_returned = int(first.adjusted_returned)
        for adjustment in unsent:
            if excess <= 0:
                break
            carrier = carriers.get(adjustment.applied_claim_id)
            reason = f"{_MONEY_BACK} before HMRC had this deduction"
            if carrier is not None:
                carrier.adjustment -= adjustment.amount
                carrier.irmarks = []  # its files change: any IRmark computed before no longer applies
                session.add(carrier)
                detail = {
                    "adjustment_withdrawn": Money(adjustment.amount).to_json(),
                    "gift_id": str(gift_id),
                    "reason": f"{reason}; download this claim's files again",
                }
                session.add(
                    ClaimEvent(claim_id=carrier.id, status=carrier.status, at=now, actor="system", detail=detail)
                )
            _withdraw(session, adjustment, reason, now)
            adjustment.applied_claim_id = None
            adjusted_returned -= adjustment.returned_amount
            excess -= adjustment.returned_amount
        if adjusted_returned != int(first.adjusted_returned):
            adjusted.append((claim_id, gift_id, adjusted_returned))
        if excess <= 0:
            continue
        sent = [a for a in adjustments if a.withdrawn_at is None]
        if sum(a.returned_amount for a in sent) >= int(first.claimed):
            # HMRC's net on this claim row is nothing: claim the gift again, in the next claim.
            repository.release_claim_gift(session, claim_id, gift_id)
            for adjustment in sent:
                _withdraw(session, adjustment, f"{_MONEY_BACK} after HMRC had this deduction: claimed again", now)
                carrier = carriers[adjustment.applied_claim_id]
                assert carrier is not None
                detail = {
                    "adjustment_claimed_again": Money(adjustment.amount).to_json(),
                    "gift_id": str(gift_id),
                    "reason": f"{_MONEY_BACK} after this claim deducted its Gift Aid: the gift is claimed again by the "
                    "next claim",
                }
                session.add(
                    ClaimEvent(claim_id=carrier.id, status=carrier.status, at=now, actor="system", detail=detail)
                )
            continue
        unnoted = [a for a in sent if a.owed_noted_at is None]
        if not unnoted:
            continue  # finance was told
        owed = gift_aid_on(excess)
        for adjustment in unnoted:
            adjustment.owed_noted_at = now
            session.add(adjustment)
        carrier = carriers[unnoted[0].applied_claim_id]
        assert carrier is not None
        detail = {
            "gift_aid_owed": Money(owed).to_json(),
            "gift_id": str(gift_id),
            "reason": (
                f"{_MONEY_BACK} after this claim deducted Gift Aid on it, and only part of the gift was taken back, "
                f"so no claim line can claim it again: HMRC owes {Money(owed).plain()}; ask HMRC to correct it"
            ),
        }
        session.add(ClaimEvent(claim_id=carrier.id, status=carrier.status, at=now, actor="system", detail=detail))
    repository.mark_adjusted(session, adjusted)
    session.flush()


def hmrc_may_have(claim: Claim) -> bool:
    """Whether HMRC has, or may have, this claim as it stands: the one answer to "was this claim sent?" wherever
    adjustments ask it. Sent (submitted or later), or still `built` after a submission that got no usable answer (an
    `unknown` error: a timeout or an HTML page answered it, or an acknowledgement without a CorrelationID): HMRC may
    hold that one, deductions included. An adjustment such a claim carries is never withdrawn from it nor moved to
    another claim, so the same tax is never deducted twice; money that comes back on its gift is put right as for a
    sent claim (the gift claimed again, or finance told what HMRC owes)."""
    return ClaimStatus(claim.status) != ClaimStatus.BUILT or any(
        error.get("type") == UNANSWERED for error in claim.errors
    )


def _withdraw(session: Session, adjustment: Adjustment, reason: str, at: dt.datetime) -> None:
    adjustment.withdrawn_at = at
    adjustment.withdrawn_reason = reason[:300]
    session.add(adjustment)


def _eligibility_of(session: Session, rules: Rules, gift_ids: list[uuid.UUID]) -> Iterator[Any]:
    """The eligibility rows (with their details) of these few gifts, claimed or not, a thousand ids a statement."""
    dialect = repository.dialect_of(session)
    for start in range(0, len(gift_ids), 1_000):
        yield from session.execute(
            eligibility_select(rules, dialect, gift_ids=gift_ids[start : start + 1_000], unclaimed_only=False)
        )


def _covered_by_another_declaration(session: Session, rules: Rules, gift_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Of these claimed gifts, those the eligibility rules still find a declaration for (in force, covering the
    gift's date, with the donor details a claim needs)."""
    return {
        row.gift_id
        for row in _eligibility_of(session, rules, gift_ids)
        if row.declaration_rank == 0 and row.details_code is None and not row.voided
    }


def _other_info(adjustments: list[Adjustment]) -> str:
    if not adjustments:
        return ""
    refunds = sum(1 for a in adjustments if a.reason == AdjustmentReason.REFUND)
    voided = len(adjustments) - refunds
    total = Money(sum(a.amount for a in adjustments)).plain()
    parts = []
    if refunds:
        parts.append(f"{refunds} donation(s) refunded or reversed after they were claimed")
    if voided:
        parts.append(f"{voided} donation(s) whose oral declaration was cancelled within 30 days")
    claims = sorted({str(a.claim_id)[:8] for a in adjustments})
    text = f"Adjustment {total}: tax previously claimed on " + " and ".join(parts) + f" (claims {', '.join(claims)})"
    return text[:350]


# --- building a claim ------------------------------------------------------------------------------------------------


def wait_for_claim_builds(session: Session) -> None:
    """Wait for a claim being built to commit, and keep the next from starting until this transaction ends (an
    erasure must see what a claim sent, and a claim must not read details being blanked)."""
    repository.lock_claims(session)


def build_claim(
    uow: UnitOfWork, settings: Settings, *, through: dt.date, actor: str, today: dt.date | None = None
) -> ClaimResult:
    """Claim every claimable gift received on or before `through` that is in no claim yet."""
    session = uow.session
    rules = rules_from(settings, today)
    repository.lock_claims(session)
    detect_adjustments(uow, rules)
    now = utc_now()
    claim = Claim(through=through, built_by=actor, built_at=now, status_changed_at=now)
    session.add(claim)
    session.flush()
    dialect = repository.dialect_of(session)
    candidates = repository.create_candidates(
        session, eligibility_select(rules, dialect, through=through, detail=False)
    )
    try:
        repository.insert_claim_gifts(session, claim.id, candidates, rules.aggregate_limit)
        repository.refresh_claim_statistics(session)
        held_ids = repository.held_back_ids(session, candidates)
    except sa.exc.IntegrityError as exc:
        raise ClaimConflict("another claim took some of these gifts at the same moment; try again") from exc
    finally:
        if dialect != "postgresql":
            repository.drop_candidates(session)
    # The words need the details the candidates table leaves out: read them for these few gifts only.
    held = [
        (row.received_on, str(row.gift_id), HeldBackGift(row.gift_id, held_back_reason(row.code, row, rules)))
        for row in _eligibility_of(session, rules, held_ids)
    ]
    held.extend(_hold_back_schedule_blank(session, claim, rules))
    held_back = [h for _, _, h in sorted(held, key=lambda item: item[:2])]
    summary = repository.claim_summary(session, claim.id)
    if summary.gifts == 0:
        session.delete(claim)
        session.flush()
        return ClaimResult(claim_id=None, held_back=held_back)
    repository.add_held_back(
        session,
        [
            {"claim_id": claim.id, "gift_id": h.gift_id, "code": h.reason.split(":", 1)[0], "reason": h.reason[:500]}
            for h in held_back
        ],
    )
    claim.lines, claim.gifts, claim.total = int(summary.lines), int(summary.gifts), int(summary.total)
    claim.earliest_on, claim.latest_on = summary.earliest, summary.latest
    claim.gift_aid = gift_aid_on(claim.total)
    claim.held_back = len(held_back)
    pending = repository.pending_adjustments(session)
    room = claim.gift_aid
    if pending and claim.lines > schedule.ROWS_PER_SCHEDULE:
        # The adjustment goes in the first schedule (Box 2) and the first message, each a claim of its own to HMRC:
        # it must fit the Gift Aid of the first schedule, the smaller of the two.
        first = repository.part_summary(session, claim.id, 1, schedule.ROWS_PER_SCHEDULE)
        room = gift_aid_on(int(first.total))
    for adjustment in pending:
        # An adjustment larger than what is left of this claim waits for the next one (HMRC takes no negative claim).
        if adjustment.amount <= room:
            adjustment.applied_claim_id = claim.id
            room -= adjustment.amount
            claim.adjustment += adjustment.amount
            session.add(adjustment)
    session.add(claim)
    session.add(
        ClaimEvent(
            claim_id=claim.id,
            status=ClaimStatus.BUILT,
            at=now,
            actor=actor,
            detail={"through": through.isoformat(), "lines": claim.lines, "held_back": claim.held_back},
        )
    )
    session.flush()
    return ClaimResult(
        claim_id=claim.id,
        lines=claim.lines,
        gifts=claim.gifts,
        total=claim.total,
        gift_aid=claim.gift_aid,
        adjustment=claim.adjustment,
        held_back=held_back,
    )


def _hold_back_schedule_blank(session: Session, claim: Claim, rules: Rules) -> list[tuple[dt.date, str, HeldBackGift]]:
    """The claim's donors whose name or house HMRC's schedule shows as nothing, even transliterated (an Arabic alef:
    the eligibility, in SQL, cannot tell): every gift of theirs comes off the claim before anything is written, held
    back as `missing_name` / `missing_house` would be, so neither file carries them and the rest is claimed. One
    cheap look at the claim's donor rows (`repository.blank_donors`); the lines are numbered again only when one
    is found. Returns (received on, gift id, held back) for each."""
    donors = {row.declaration_id: row for row in repository.blank_donors(session, claim.id)}
    if not donors:
        return []
    rows = repository.claim_gifts_of_declarations(session, claim.id, list(donors))
    # Nothing has been written yet: the whole claim is numbered again, as one part.
    repository.take_off_claim(
        session, claim.id, [row.gift_id for row in rows], per_part=_WHOLE_CLAIM, per_message=_WHOLE_CLAIM
    )
    held = []
    for row in rows:
        reason = _claimed_gift_reason(row, donors[row.declaration_id], rules, out_of_time=False)
        held.append((row.received_on, str(row.gift_id), HeldBackGift(row.gift_id, reason)))
    return held


def _claimed_gift_reason(row: Any, donor: Any, rules: Rules, *, out_of_time: bool) -> str:
    """Why a gift comes off a claim (`row`: its claim row; `donor`: its blank donor row, or None): past the limit, or
    a donor's house or name that is nothing in the files (`missing_house` before `missing_name`)."""
    if out_of_time:
        code = Code.OUT_OF_TIME.value
    else:
        code = (_schedule_blank_code(donor) if donor is not None else None) or Code.MISSING_NAME.value
    details = types.SimpleNamespace(
        received_on=row.received_on,
        amount=row.amount,
        returned=0,
        first_name=donor.first_name if donor is not None else None,
        last_name=donor.last_name if donor is not None else None,
        house=donor.house if donor is not None else None,
    )
    return held_back_reason(code, details, rules)


_WHOLE_CLAIM = 2**31 - 1  # lines per part when a claim is numbered again as one part


def held_back_amounts(session: Session, claim_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """The gifts a claim held back, each with its own amount and the money returned on it (now), by gift id: a
    refunded gift has nothing left to claim, which says nothing of what it was."""
    return {
        str(row.gift_id): {"amount": int(row.amount), "returned": int(row.returned)}
        for row in repository.held_back_gift_amounts(session, claim_id)
    }


def get_claim(session: Session, claim_id: uuid.UUID) -> Claim:
    claim = repository.get_claim(session, claim_id)
    if claim is None:
        raise ClaimNotFound(f"no claim {claim_id}")
    return claim


def list_claims(session: Session) -> list[Claim]:
    return repository.list_claims(session)


def claim_json(session: Session, claim: Claim, *, detail: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(claim.id),
        "claim_id": str(claim.id),
        "status": claim.status.value if isinstance(claim.status, ClaimStatus) else claim.status,
        "through": claim.through,
        "lines": claim.lines,
        "gifts": claim.gifts,
        "total": Money(claim.total),
        "gift_aid": Money(claim.gift_aid),
        "adjustment": Money(claim.adjustment),
        "earliest_on": claim.earliest_on,
        "latest_on": claim.latest_on,
        "held_back_count": claim.held_back,
        "schedules": schedule_count(claim),
        "messages": message_count(claim),
        "irmarks": claim.irmarks,
        "correlation_id": claim.correlation_id,
        "paid_amount": Money(claim.paid_amount) if claim.paid_amount is not None else None,
        "paid_on": claim.paid_on,
        "built_at": claim.built_at,
        "built_by": claim.built_by,
        "status_changed_at": claim.status_changed_at,
    }
    # A rejected claim's files are not written again (`ClaimRejected`): what was sent is under its messages.
    rejected = ClaimStatus(claim.status) == ClaimStatus.REJECTED
    body["schedule_parts"] = [] if rejected else schedule_parts(session, claim)
    body["files"] = [] if rejected else claim_files(claim, body["schedule_parts"])
    if detail:
        body["events"] = [
            {"status": e.status, "at": e.at, "actor": e.actor, "detail": e.detail}
            for e in repository.claim_events(session, claim.id)
        ]
        body["held_back"] = [
            {"gift_id": str(h.gift_id), "reason": h.reason} for h in repository.held_back_of(session, claim.id)
        ]
        body["errors"] = claim.errors
        body["hmrc_receipt"] = claim.hmrc_receipt
        body["rejection_reason"] = claim.rejection_reason
    return body


# --- files -----------------------------------------------------------------------------------------------------------


def schedule_count(claim: Claim) -> int:
    return -(-claim.lines // schedule.ROWS_PER_SCHEDULE)


def message_count(claim: Claim) -> int:
    return -(-claim.lines // claim_xml.MAX_GAD_PER_MESSAGE)


def schedule_parts(session: Session, claim: Claim) -> list[int]:
    """The numbers of the claim's schedules that have lines, each a file: 1..`schedule_count`, less the schedules a
    take-off left empty at the end of a message that is not the last (`repository.take_off_claim`: no schedule moves
    into another message, so the numbers stay those of the claim's history and of its downloads' `?part=N`). Only a
    claim of several messages can have one, so only its rows are read."""
    count = schedule_count(claim)
    if message_count(claim) <= 1:
        return list(range(1, count + 1))
    return sorted(repository.part_earliest(session, claim.id, schedule.ROWS_PER_SCHEDULE))


def claim_files(claim: Claim, schedules: list[int]) -> list[str]:
    """The API's URLs of every file of the claim, each part its own (`?part=N`, when it has several): every schedule
    that has lines (`schedule_parts`), then every message. A client fetching them all sends HMRC the whole claim."""
    base = f"/api/giftaid/claims/{claim.id}"
    if schedule_count(claim) <= 1:
        files = [f"{base}/schedule.ods"]
    else:
        files = [f"{base}/schedule.ods?part={part}" for part in schedules]
    messages = message_count(claim)
    if messages <= 1:
        return [*files, f"{base}/claim.xml"]
    return files + [f"{base}/claim.xml?part={part}" for part in range(1, messages + 1)]


def _aggregate_description(donors: int) -> str:
    return f"Small donations, {donors} donors"[:35]


def claim_lines(session: Session, claim_id: uuid.UUID, first_line: int, last_line: int) -> Iterator[claim_xml.Line]:
    """The claim's lines in order, rebuilt from the gifts on them (aggregated lines summed)."""
    return _lines_of(repository.stream_line_rows(session, claim_id, first_line, last_line))


def _lines_of(rows: Iterable[Any]) -> Iterator[claim_xml.Line]:
    Line = claim_xml.Line
    pending: list[Any] = []
    for row in rows:
        if pending and row.line_no != pending[0].line_no:
            yield _aggregate_line(pending)
            pending = []
        if row.aggregated:
            pending.append(row)
            continue
        yield Line(
            row.title,
            row.first_name,
            row.last_name,
            row.house,
            row.postcode,
            row.overseas,
            None,
            row.received_on,
            row.amount,
        )
    if pending:
        yield _aggregate_line(pending)


def _aggregate_line(rows: list[Any]) -> claim_xml.Line:
    return claim_xml.Line(
        None,
        "",
        "",
        "",
        "",
        False,
        _aggregate_description(len(rows)),
        max(r.received_on for r in rows),
        sum(int(r.amount) for r in rows),
    )


def _exportable(claim: Claim) -> None:
    if ClaimStatus(claim.status) == ClaimStatus.REJECTED:
        raise ClaimRejected(
            f"claim {claim.id} was rejected by HMRC: its gifts and adjustments went back to be claimed again; "
            f"what was sent is kept under /api/giftaid/claims/{claim.id}/messages"
        )


def _part_bounds(claim: Claim, part: int, per_part: int) -> tuple[int, int]:
    parts = -(-claim.lines // per_part)
    if not 1 <= part <= max(parts, 1):
        raise InvalidClaimRequest(f"claim {claim.id} has {parts} part(s), not {part}")
    first = (part - 1) * per_part + 1
    return first, min(part * per_part, claim.lines)


# What a claim event records of the parts first written with it, and of the parts a take-off left empty and dropped
# (a take-off's event may hold both: the parts are dropped first, then the files are written).
_PARTS_WRITTEN = "parts_written"
_PARTS_DROPPED = "parts_dropped"
PartKind = Literal["schedule", "message"]


@dataclass(frozen=True)
class PartWritten:
    """A part of a claim (a schedule of 1,000 lines, a message of 500,000) as first written: its kind and number
    then, the UK day it was written (`on`: its gifts were judged in time on that day), and the schedules (of
    `schedule.ROWS_PER_SCHEDULE` lines) it covers, numbered as they are now."""

    kind: str
    part: int
    on: dt.date
    first_schedule: int
    last_schedule: int

    def lines(self) -> tuple[int, int]:
        per = schedule.ROWS_PER_SCHEDULE
        return (self.first_schedule - 1) * per + 1, self.last_schedule * per

    def after_drop(self, dropped: list[int]) -> PartWritten | None:
        """Where its schedules are once these (numbered before) were dropped, the later ones of the same message
        moving down (`repository.take_off_claim`: no schedule moves into another message)."""
        kept = [n for n in range(self.first_schedule, self.last_schedule + 1) if n not in dropped]
        if not kept:
            return None
        per_message = max(claim_xml.MAX_GAD_PER_MESSAGE // schedule.ROWS_PER_SCHEDULE, 1)
        gone = set(dropped)
        # Messages dropped whole (every schedule of theirs dropped): the later messages move down whole.
        emptied = {
            m
            for m in {(d - 1) // per_message for d in gone}
            if all(s in gone for s in range(m * per_message + 1, (m + 1) * per_message + 1))
        }

        def moved(n: int) -> int:
            message = (n - 1) // per_message
            whole = sum(1 for m in emptied if m < message) * per_message
            return n - whole - sum(1 for d in gone if d < n and (d - 1) // per_message == message)

        return dataclasses.replace(self, first_schedule=moved(kept[0]), last_schedule=moved(kept[-1]))


def parts_written(session: Session, claim_id: uuid.UUID) -> list[PartWritten]:
    """The claim's parts written so far, from its history (`parts_written` in its events), numbered as they are now:
    a take-off that left a part empty dropped it and moved the later ones down (`parts_dropped`)."""
    written: list[PartWritten] = []
    for event in repository.claim_events(session, claim_id):
        dropped = event.detail.get(_PARTS_DROPPED)
        if dropped:
            written = [moved for part in written if (moved := part.after_drop(dropped)) is not None]
        for record in event.detail.get(_PARTS_WRITTEN, []):
            first, last = record["schedules"]
            on = dt.date.fromisoformat(record["on"])
            written.append(PartWritten(record["kind"], record["part"], on, first, last))
    return written


def _parts_first_written(
    session: Session,
    claim: Claim,
    parts: Iterable[tuple[PartKind, int, tuple[int, int]]],
    *,
    today: dt.date | None,
    via: str,
) -> list[dict[str, Any]]:
    """What the claim's history keeps of these parts (kind, number, lines) being written, for those written for the
    first time: which part, the UK day, how (`via`); the event holding them says who and when."""
    if repository.read_only(session):
        return []  # a read session (`Runtime.read_session`: tests, tools) keeps nothing; a download is a unit of work
    parts = list(parts)
    records = _first_writings(session, claim, parts, today=today, via=via)
    if records:
        # Two downloads of one part at the same instant both found it unwritten and both recorded its first writing:
        # the first time, the claim's row is locked (the second waits, then reads the first's record), as a build,
        # a take-off or a submit lock it; written parts cost no lock. Only the row: no path that holds it waits for
        # the claims' lock afterwards, so it cannot deadlock with a build.
        repository.lock_claim_row(session, claim.id)
        records = _first_writings(session, claim, parts, today=today, via=via)
    return records


def _first_writings(
    session: Session,
    claim: Claim,
    parts: list[tuple[PartKind, int, tuple[int, int]]],
    *,
    today: dt.date | None,
    via: str,
) -> list[dict[str, Any]]:
    per = schedule.ROWS_PER_SCHEDULE
    known = {(w.kind, w.first_schedule, w.last_schedule) for w in parts_written(session, claim.id)}
    on = (today or uk_today()).isoformat()
    records = []
    for kind, part, (first, last) in parts:
        schedules = ((first - 1) // per + 1, (last - 1) // per + 1)
        if (kind, *schedules) in known:
            continue
        known.add((kind, *schedules))
        records.append(
            {"kind": kind, "part": part, "lines": [first, last], "schedules": list(schedules), "on": on, "via": via}
        )
    return records


def _record_written(
    session: Session,
    claim: Claim,
    parts: Iterable[tuple[PartKind, int, tuple[int, int]]],
    *,
    actor: str,
    today: dt.date | None,
    via: str,
    into: ClaimEvent | None,
) -> None:
    """The claim's history: the parts handed out for the first time (who, when, which part), in `into` (the event of
    a take-off made before they were written) or an event of their own. A part written before the four-year
    cut-off day of some of its gifts keeps them (`take_off_what_hmrc_would_refuse`)."""
    records = _parts_first_written(session, claim, parts, today=today, via=via)
    if not records:
        return
    if into is not None:
        into.detail = {**into.detail, _PARTS_WRITTEN: records}
        session.add(into)
    else:
        words = ", ".join(f"{r['kind']} {r['part']} (lines {r['lines'][0]}-{r['lines'][1]})" for r in records)
        detail = {_PARTS_WRITTEN: records, "reason": f"first written ({via}): {words}"}
        session.add(ClaimEvent(claim_id=claim.id, status=claim.status, at=utc_now(), actor=actor, detail=detail))
    session.flush()


def take_off_what_hmrc_would_refuse(
    session: Session, settings: Settings, claim: Claim, *, actor: str, today: dt.date | None = None
) -> list[HeldBackGift]:
    """Before a claim still `built` is written or sent: take off the gifts HMRC would now refuse (`_take_off`).
    Returns what was taken off."""
    return _take_off(session, settings, claim, actor=actor, today=today)[0]


def _take_off(
    session: Session,
    settings: Settings,
    claim: Claim,
    *,
    actor: str,
    today: dt.date | None = None,
    sent_again: bool = False,
) -> tuple[list[HeldBackGift], ClaimEvent | None]:
    """Before a claim still `built` is written or sent: take off the gifts HMRC would now refuse, and hold them back
    with their reason (in the claim's held-back gifts and its history, with who and when).

    - Gifts now past the four-year limit (`out_of_time`): the claim was built in time, but is written or sent later,
      and HMRC counts the limit to the day it receives the claim.
    - Donor lines whose donor's name or house holds nothing a file can carry (giftaid.sendable), in a claim built
      before the eligibility held such gifts back (`missing_name` / `missing_house`).

    Their rows go (the gifts are claimed by no claim: an out-of-time gift can never be claimed again; a donor whose
    details are mended can be), the lines are numbered again, the totals and IRmarks follow, adjustments about those
    gifts are void as for a rejected claim, and adjustments that no longer fit the claim's Gift Aid wait for the
    next claim. If nothing would be left, nothing changes: `NothingLeftToSend` (409) says what to do.
    Claims already sent keep their gifts: their files are what was sent. HMRC may hold this one with a gift taken
    off (`hmrc_may_have`: its submission got no answer; or the gift's line was in a part already handed out): then
    HMRC may have paid its tax. Such a gift, unless out of time (never claimable again anyway), stays with this claim
    on no line (`gifts_held`; `repository.OFF_THE_LINES`), so no later claim claims it twice, and the adjustments
    about it stand where they are (`adjustments_kept`; about every gift taken off when HMRC may hold the whole
    claim), until the claim is rejected or sent again (`sent_again`: finance found HMRC does not have it, and
    `_settle_sent_again` lets them go as this would have). Returns what was taken off, and the event that says so
    (the parts then written are recorded in it)."""
    if ClaimStatus(claim.status) != ClaimStatus.BUILT:
        return [], None
    rules = rules_from(settings, today)
    cutoff = rules.out_of_time_through
    # Free in the usual case: a claim whose earliest gift is in time has no gift out of time.
    late = claim.earliest_on is not None and claim.earliest_on <= cutoff
    blank = repository.blank_donors(session, claim.id)
    if not late and not blank:
        return [], None
    # A build waits for the gifts taken off here (its adjustment about one would carry tax HMRC never had); one
    # already running finishes first, and its adjustments about these gifts are void below.
    locked = repository.lock_claims_then_claim(session, claim.id)
    if locked is None or ClaimStatus(locked.status) != ClaimStatus.BUILT:
        return [], None
    claim = locked
    blank = repository.blank_donors(session, claim.id)  # again, under the lock: another export may have been first
    donors = {row.declaration_id: row for row in blank}
    # A part already written (downloaded, exported, or sent with no answer) keeps the gifts that were in time then:
    # it was handed out in time, so HMRC may have them, in time, and judges them.
    handed_out = [
        (first, last, rules_from(settings, written.on).out_of_time_through)
        for written in parts_written(session, claim.id)
        for first, last in [written.lines()]
    ]
    rows = repository.claim_gifts_to_take_off(
        session,
        claim.id,
        received_through=cutoff if late else None,
        declaration_ids=list(donors),
        handed_out=handed_out,
    )
    if not rows:
        return [], None
    # HMRC may hold the claim as first sent (no answer came back), or the part a line was on as handed out.
    may_hold = hmrc_may_have(claim) and not sent_again
    taken: list[HeldBackGift] = []
    held: set[uuid.UUID] = set()  # kept with this claim, on no line: HMRC may have claimed them with it
    for row in rows:
        out_of_time = row.received_on <= cutoff
        reason = _claimed_gift_reason(row, donors.get(row.declaration_id), rules, out_of_time=out_of_time)
        words = (
            f"{reason} (taken off this claim, built on "
            f"{claim.built_at.astimezone(dt.UTC):%d/%m/%Y}, before it was written or sent on {rules.today:%d/%m/%Y})"
        )
        handed = any(first <= row.line_no <= last for first, last, _ in handed_out)
        if not out_of_time and not sent_again and (may_hold or handed):
            held.add(row.gift_id)
            words = (
                f"{words}; HMRC may hold this claim with it as first sent or handed out, so it stays with this claim "
                "(on no line) and no other claim claims it until this one is rejected or sent again (--again)"
            )
        taken.append(HeldBackGift(row.gift_id, words[:500]))
    if len(taken) >= claim.gifts:
        shown = ", ".join(str(h.gift_id) for h in taken[:10]) + (" ..." if len(taken) > 10 else "")
        raise NothingLeftToSend(
            f"every gift of claim {claim.id} would now be refused by HMRC ({taken[0].reason.split(' (taken')[0]}; "
            f"gifts {shown}): there is nothing left to send. Record it as rejected to release its gifts and "
            f'adjustments: giving giftaid status {claim.id} rejected --reason "nothing left to claim"'
        )
    gift_ids = [h.gift_id for h in taken]
    dropped = repository.take_off_claim(
        session,
        claim.id,
        gift_ids,
        per_part=schedule.ROWS_PER_SCHEDULE,
        per_message=claim_xml.MAX_GAD_PER_MESSAGE,
        keep=held,
    )
    repository.add_held_back(
        session,
        [
            {"claim_id": claim.id, "gift_id": h.gift_id, "code": h.reason.split(":", 1)[0], "reason": h.reason}
            for h in taken
        ],
    )
    now = utc_now()
    detail: dict[str, Any] = {
        "gifts_taken_off": [h.to_json() for h in taken],
        "reason": "gifts HMRC would refuse now were taken off before the claim was written or sent; "
        "download this claim's files again",
    }
    if dropped:
        # The schedules after a part left empty move down (`parts_written` follows them through this).
        detail[_PARTS_DROPPED] = dropped
    if held:
        detail["gifts_held"] = [str(g) for g in gift_ids if g in held]
    # Maybe sent counts as sent: HMRC may have paid the tax these adjustments take back.
    keep_about = set(gift_ids) if may_hold else held
    kept = [str(a.id) for a in repository.adjustments_from(session, claim.id) if a.gift_id in keep_about]
    if kept:
        detail["adjustments_kept"] = kept
    void, deducted = _void_adjustments_about(session, claim, set(gift_ids) - keep_about, actor=actor, at=now)
    if void:
        detail["adjustments_void"] = void
    if deducted:
        detail["adjustments_already_deducted"] = deducted
    summary = repository.claim_summary(session, claim.id)
    claim.lines, claim.gifts, claim.total = int(summary.lines), int(summary.gifts), int(summary.total)
    claim.earliest_on, claim.latest_on = summary.earliest, summary.latest
    claim.gift_aid = gift_aid_on(claim.total)
    claim.held_back += len(taken)
    claim.irmarks = []  # its files change: any IRmark computed before no longer applies
    released = _fit_adjustments(session, claim, sent_again=sent_again)
    if released:
        detail["adjustments_released"] = released
    detail.update(
        {
            "lines": claim.lines,
            "total": Money(claim.total).to_json(),
            "gift_aid": Money(claim.gift_aid).to_json(),
            "adjustment": Money(claim.adjustment).to_json(),
        }
    )
    session.add(claim)
    event = ClaimEvent(claim_id=claim.id, status=claim.status, at=now, actor=actor, detail=detail)
    session.add(event)
    session.flush()
    log.info("claim %s: %d gift(s) HMRC would refuse now taken off", claim.id, len(taken))
    return taken, event


def _settle_sent_again(session: Session, claim: Claim, *, actor: str) -> None:
    """A claim sent again (`again`: finance found HMRC does not hold it as first sent or handed out): what earlier
    take-offs kept because HMRC might (`_take_off`) is settled as they would have settled it for a claim never sent.
    The gifts held with the claim on no line are let go (free to be claimed again), and the adjustments kept about
    gifts taken off it are void (HMRC never paid that tax; the claim carrying one would deduct it). The adjustments it
    carries that no longer fit its Gift Aid (kept on it while HMRC might hold it) wait for the next claim."""
    released = repository.release_held_gifts(session, claim.id)
    about = repository.taken_off_adjusted(session, claim.id)
    unfit = _fit_adjustments(session, claim, sent_again=True)
    if not released and not about and not unfit:
        return
    now = utc_now()
    detail: dict[str, Any] = {
        "reason": "sent again: HMRC does not hold this claim as first sent or handed out, so the gifts taken off it "
        "are not claimed by it and the tax they took back was never paid"
    }
    if released:
        detail["gifts_released"] = sorted(str(g) for g in released)
    void, deducted = _void_adjustments_about(session, claim, about, actor=actor, at=now)
    if void:
        detail["adjustments_void"] = void
    if deducted:
        detail["adjustments_already_deducted"] = deducted
    if unfit:
        detail["adjustments_released"] = unfit
        detail["adjustment"] = Money(claim.adjustment).to_json()
        claim.irmarks = []  # its files change: any IRmark computed before no longer applies
        session.add(claim)
    session.add(ClaimEvent(claim_id=claim.id, status=claim.status, at=now, actor=actor, detail=detail))
    session.flush()


def _void_adjustments_about(
    session: Session, claim: Claim, gift_ids: set[uuid.UUID], *, actor: str, at: dt.datetime
) -> tuple[list[str], list[str]]:
    """Adjustments about gifts taken off a claim before it was sent are void (HMRC will never have had that tax), as
    for a rejected claim: gone, and off the unsent claim carrying one; one a sent claim carried stays, listed for
    finance to correct. Returns (void, already deducted) adjustment ids."""
    void, deducted = [], []
    for adjustment in repository.adjustments_from(session, claim.id):
        if adjustment.gift_id not in gift_ids or _withdrawn_and_free(adjustment):
            continue
        if adjustment.applied_claim_id is None or _withdraw_from_unsent(
            session,
            adjustment,
            reason=f"gift {adjustment.gift_id} was taken off claim {claim.id} before it was sent; download this "
            "claim's files again",
            actor=actor,
            at=at,
        ):
            void.append(str(adjustment.id))
            session.delete(adjustment)
        else:
            deducted.append(str(adjustment.id))
    return void, deducted


def _withdrawn_and_free(adjustment: Adjustment) -> bool:
    """Withdrawn (its money came back before HMRC had the deduction) and carried by no claim: it takes nothing back
    and is kept as it is, with when and why, never deleted (an audit record), whatever becomes of its claim."""
    return adjustment.withdrawn_at is not None and adjustment.applied_claim_id is None


def _fit_adjustments(session: Session, claim: Claim, *, sent_again: bool = False) -> list[str]:
    """The adjustments a claim carries must fit its Gift Aid (its first schedule's, when it has several: HMRC takes no
    negative claim); those that no longer do wait for the next claim, newest first. Returns their ids. `sent_again`:
    the claim is being sent again (`--again`: HMRC does not hold it), though it still carries its `unknown` error."""
    if not claim.adjustment or (hmrc_may_have(claim) and not sent_again):
        # HMRC may hold it with these deductions (a submission that got no answer): none moves to another claim.
        return []
    room = claim.gift_aid
    if claim.lines > schedule.ROWS_PER_SCHEDULE:
        room = gift_aid_on(int(repository.part_summary(session, claim.id, 1, schedule.ROWS_PER_SCHEDULE).total))
    released = []
    for adjustment in reversed(repository.adjustments_applied_to(session, claim.id)):
        if claim.adjustment <= room:
            break
        if adjustment.withdrawn_at is not None:
            continue
        adjustment.applied_claim_id = None
        claim.adjustment -= adjustment.amount
        session.add(adjustment)
        released.append(str(adjustment.id))
    return released


def schedule_part(
    session: Session,
    settings: Settings,
    claim: Claim,
    part: int = 1,
    *,
    actor: str = "system",
    today: dt.date | None = None,
) -> bytes:
    """Schedule `part` of a claim (1,000 lines each), checked by our validator with HMRC's rules.
    Box 2 (the adjustment) is on the first schedule only. A claim not sent yet first loses the gifts HMRC would now
    refuse (`take_off_what_hmrc_would_refuse`)."""
    _exportable(claim)
    _, event = _take_off(session, settings, claim, actor=actor, today=today)
    first, last = _part_bounds(claim, part, schedule.ROWS_PER_SCHEDULE)
    # Box 1 (the part's earliest gift) from the gifts read for its lines: one read of the claim's rows, not two
    # (without an index on line numbers, each reads every row of the claim: docs/giftaid.md, Performance).
    earliest: list[dt.date] = []

    def watched(rows: Iterable[Any]) -> Iterator[Any]:
        for row in rows:
            if not earliest or row.received_on < earliest[0]:
                earliest[:] = [row.received_on]
            yield row

    lines = list(_lines_of(watched(repository.stream_line_rows(session, claim.id, first, last))))
    if not lines:
        # A claim of several messages whose take-off emptied one of a message's schedules: the later schedules of
        # that message moved down, leaving its last one empty (no schedule moves into another message).
        raise NothingLeftToSend(
            f"schedule {part} of claim {claim.id} has no lines left (gifts HMRC would refuse were taken off): "
            "there is nothing to upload in it; upload the claim's other schedules"
        )
    data = _checked_schedule(claim, part, lines, earliest[0] if earliest else None)
    _record_written(
        session, claim, [("schedule", part, (first, last))], actor=actor, today=today, via="download", into=event
    )
    return data


def _checked_schedule(claim: Claim, part: int, lines: list[claim_xml.Line], earliest: dt.date | None) -> bytes:
    data = schedule.render_schedule(lines, earliest=earliest, overclaimed=claim.adjustment if part == 1 else None)
    report = validator.validate_schedule(data, today=max(uk_today(), claim.latest_on or uk_today()))
    if not report.ok:
        problems = "; ".join(str(e) for e in report.errors[:5])
        raise ExportFailed(f"schedule {part} of claim {claim.id} fails HMRC's checks: {problems}")
    return data


def write_xml_part(
    session: Session,
    settings: Settings,
    claim: Claim,
    part: int,
    out: IO[bytes],
    *,
    check: bool = True,
    actor: str = "system",
    today: dt.date | None = None,
) -> claim_xml.MessageResult:
    """Charities Online message `part` of a claim (500,000 lines each), streamed to a seekable file.
    The adjustment and its explanation go in the first message. A claim not sent yet first loses the gifts HMRC
    would now refuse (`take_off_what_hmrc_would_refuse`). Its first writing is recorded in the claim's history."""
    _exportable(claim)
    _, event = _take_off(session, settings, claim, actor=actor, today=today)
    result = _write_xml_part(session, settings, claim, part, out, check=check)
    bounds = _part_bounds(claim, part, claim_xml.MAX_GAD_PER_MESSAGE)
    _record_written(session, claim, [("message", part, bounds)], actor=actor, today=today, via="download", into=event)
    return result


def _write_xml_part(
    session: Session, settings: Settings, claim: Claim, part: int, out: IO[bytes], *, check: bool
) -> claim_xml.MessageResult:
    first, last = _part_bounds(claim, part, claim_xml.MAX_GAD_PER_MESSAGE)
    # A message holding the whole claim (any claim up to 500,000 lines) has the claim's own dates and total: no read
    # of every row of the claim for them.
    whole = first == 1 and last == claim.lines and claim.earliest_on is not None
    bounds = (
        types.SimpleNamespace(earliest=claim.earliest_on, latest=claim.latest_on, total=claim.total)
        if whole
        else repository.part_summary(session, claim.id, first, last)
    )
    adjustments = repository.adjustments_applied_to(session, claim.id) if part == 1 else []
    start = out.tell()
    result = claim_xml.write_message(
        out,
        claim_xml.Charity.from_settings(settings),
        gad_chunks=repository.stream_gad_xml(session, claim.id, first, last),
        earliest=bounds.earliest,
        period_end=bounds.latest,
        adjustment=claim.adjustment if part == 1 else 0,
        other_info=_other_info(adjustments) if part == 1 and claim.adjustment else "",
    )
    result.first_line = first
    result.total = int(bounds.total)
    if check:
        out.flush()
        out.seek(start)
        problems = claim_xml.check_business_rules(out, today=uk_today())
        out.seek(start + result.bytes_written)
        if problems:
            raise ExportFailed(
                f"message {part} of claim {claim.id} breaks HMRC's rules: "
                + "; ".join(f"{p.code} {p.message} {p.location}" for p in problems[:5])
            )
    irmarks = list(claim.irmarks)
    while len(irmarks) < part:
        irmarks.append("")
    irmarks[part - 1] = result.irmark
    claim.irmarks = irmarks
    session.add(claim)
    return result


def write_claim_files(
    session: Session,
    settings: Settings,
    claim: Claim,
    out_dir: Path,
    formats: Format = "both",
    *,
    check: bool = True,
    actor: str = "system",
    today: dt.date | None = None,
) -> list[Path]:
    """The schedule(s) and/or Charities Online message(s) of a claim, written into `out_dir`. A claim not sent yet
    first loses the gifts HMRC would now refuse (`take_off_what_hmrc_would_refuse`), in the same transaction."""
    _exportable(claim)
    _, event = _take_off(session, settings, claim, actor=actor, today=today)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        _write_claim_files(session, settings, claim, out_dir, formats, check=check, written=written)
        parts = _parts_of(claim, formats)
        _record_written(session, claim, parts, actor=actor, today=today, via="files", into=event)
    except BaseException:
        # A file that fails (HMRC's checks, the disk) leaves none of the claim's files: a schedule left alone in
        # DIR would look like a claim to upload while its gifts stay unclaimed.
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _parts_of(claim: Claim, formats: Format) -> Iterator[tuple[PartKind, int, tuple[int, int]]]:
    """The parts `write_claim_files` writes, with their lines: a part is lines by number, short or not."""
    if formats in ("ods", "both"):
        for part in range(1, schedule_count(claim) + 1):
            yield "schedule", part, _part_bounds(claim, part, schedule.ROWS_PER_SCHEDULE)
    if formats in ("xml", "both"):
        for part in range(1, message_count(claim) + 1):
            yield "message", part, _part_bounds(claim, part, claim_xml.MAX_GAD_PER_MESSAGE)


def _write_claim_files(
    session: Session,
    settings: Settings,
    claim: Claim,
    out_dir: Path,
    formats: Format,
    *,
    check: bool,
    written: list[Path],
) -> None:
    stem = f"gift-aid-claim-{claim.through.isoformat()}-{str(claim.id)[:8]}"
    if formats in ("ods", "both"):
        count = schedule_count(claim)
        # The claim's lines read once, in order (its rows are stored in gift order: every read sorts them), and
        # cut into schedules of 1,000 lines.
        per = schedule.ROWS_PER_SCHEDULE
        earliest = repository.part_earliest(session, claim.id, per)
        # Cut by line number, as a download of one part is: a part's lines need not be a full 1,000 (gifts taken
        # off before it was written leave it short, `take_off_what_hmrc_would_refuse`).
        rows = repository.stream_line_rows(session, claim.id, 1, claim.lines)
        parts = itertools.groupby(rows, key=lambda row: (row.line_no - 1) // per + 1)
        for part, chunk in parts:
            name = f"{stem}-schedule.ods" if count == 1 else f"{stem}-schedule-{part}-of-{count}.ods"
            path = out_dir / name
            path.write_bytes(_checked_schedule(claim, part, list(_lines_of(chunk)), earliest.get(part)))
            written.append(path)
    if formats in ("xml", "both"):
        count = message_count(claim)
        for part in range(1, count + 1):
            name = f"{stem}.xml" if count == 1 else f"{stem}-{part}-of-{count}.xml"
            path = out_dir / name
            handle, temporary = tempfile.mkstemp(dir=out_dir, prefix=".giftaid-", suffix=".xml")
            try:
                with os.fdopen(handle, "w+b") as out:
                    _write_xml_part(session, settings, claim, part, out, check=check)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            written.append(path)


# --- status ----------------------------------------------------------------------------------------------------------


def change_status(
    uow: UnitOfWork,
    claim_id: uuid.UUID,
    status: ClaimStatus,
    *,
    actor: str,
    reason: str = "",
    paid_amount: int | None = None,
    paid_on: dt.date | None = None,
    detail: dict[str, Any] | None = None,
    delete_after_ms: int | None = None,
) -> Claim:
    """Move a claim on (built → submitted → accepted | rejected → paid), recording who and when. Only a rejected
    claim releases its gifts (and the adjustments it carried), under the claims' lock as a build: one started
    meanwhile would take back tax HMRC never paid on them (`repository.lock_claims_then_claim`).

    `delete_after_ms`: when the job deleting HMRC's copy of a decided gateway submission is due (DELETE_AFTER_MS, a
    minute on, by default, as the caller tries the delete at once after its commit; 0 when nothing does: the
    sweep's poll job)."""
    session = uow.session
    claims_first = status == ClaimStatus.REJECTED
    claim = _locked_claim(session, claim_id, claims_first=claims_first)
    current = ClaimStatus(claim.status)
    if status not in TRANSITIONS[current]:
        raise InvalidTransition(f"claim {claim_id} is {current.value}; it cannot become {status.value}")
    event_detail = dict(detail or {})
    now = utc_now()
    if status == ClaimStatus.PAID:
        if paid_amount is None or paid_on is None:
            raise InvalidClaimRequest("a paid claim needs HMRC's payment amount and date")
        if paid_amount < 0:
            raise InvalidClaimRequest("the payment amount cannot be negative")
        if paid_on > uk_today():
            # A slip (2062 for 2026) would stand as HMRC's payment in the claim's history and the accounts.
            raise InvalidClaimRequest(f"HMRC's payment date cannot be in the future: {paid_on:%d/%m/%Y}")
        claim.paid_amount, claim.paid_on = paid_amount, paid_on
        event_detail.update({"amount": Money(paid_amount).to_json(), "paid_on": paid_on.isoformat()})
        expected = claim.gift_aid - claim.adjustment
        if paid_amount != expected:
            event_detail["expected"] = Money(expected).to_json()
    if status == ClaimStatus.REJECTED:
        claim.rejection_reason = reason[:500]
        event_detail["released_gifts"] = repository.release_claim_gifts(session, claim.id)
        claimed_again, given_back = [], []
        for adjustment in repository.adjustments_applied_to(session, claim.id):
            if adjustment.withdrawn_at is not None:
                # Withdrawn because the gift was claimed again (its money came back after this claim had deducted
                # it): HMRC never had the deduction after all, so the first claim stands and the gift may now be
                # claimed twice. Kept as it is, for finance to see and correct.
                claimed_again.append(str(adjustment.gift_id))
                continue
            adjustment.applied_claim_id = None
            session.add(adjustment)
            given_back.append(str(adjustment.id))
        if claimed_again:
            event_detail["gifts_claimed_again"] = claimed_again
        # A rejected claim deducts nothing: its `adjustment` is 0 (the next claim carries what it gave back, and
        # the two must not count the same tax twice); what it carried stays in this event.
        if claim.adjustment:
            event_detail["adjustment_carried"] = Money(claim.adjustment).to_json()
            event_detail["adjustments_given_back"] = given_back
            claim.adjustment = 0
        # Adjustments about this claim's gifts are void: HMRC never paid that tax. One a later claim carries comes
        # off it while that claim is unsent; once sent, HMRC has the deduction and finance must correct it there.
        kept_elsewhere = []
        for adjustment in repository.adjustments_from(session, claim.id):
            if _withdrawn_and_free(adjustment):
                continue
            if adjustment.applied_claim_id is None or _withdraw_from_unsent(
                session,
                adjustment,
                reason=f"claim {claim.id} that claimed this gift was rejected; download this claim's files again",
                actor=actor,
                at=now,
            ):
                session.delete(adjustment)
            else:
                kept_elsewhere.append(str(adjustment.id))
        if kept_elsewhere:
            event_detail["adjustments_already_deducted"] = kept_elsewhere
    if reason:
        event_detail["reason"] = reason
    if current == ClaimStatus.SUBMITTED and claim.correlation_id:
        # Decided (by a poll, or by hand): HMRC's copy of the submission is deleted once this is committed, by a
        # job recorded here, with the decision.
        delay = DELETE_AFTER_MS if delete_after_ms is None else delete_after_ms
        uow.enqueue(DELETE_AT_HMRC, delay_ms=delay or None, claim_id=str(claim.id))
    claim.status = status
    claim.status_changed_at = now
    session.add(claim)
    session.add(ClaimEvent(claim_id=claim.id, status=status, at=now, actor=actor, detail=event_detail))
    session.flush()
    return claim


def _withdraw_from_unsent(
    session: Session, adjustment: Adjustment, *, reason: str, actor: str, at: dt.datetime
) -> bool:
    """Take a void adjustment off the claim carrying it, if that claim is unsent (`hmrc_may_have` says no): its Box 2
    and XML are written from the database when downloaded, so the next download leaves it out; its history says
    why. One HMRC may hold (sent, or built after a submission that got no answer) keeps it."""
    assert adjustment.applied_claim_id is not None
    carrier = repository.get_claim(session, adjustment.applied_claim_id, for_update=True)
    if carrier is None or hmrc_may_have(carrier):
        return False
    carrier.adjustment -= adjustment.amount
    carrier.irmarks = []  # the files change: any IRmark computed before no longer applies
    session.add(carrier)
    detail = {
        "adjustment_withdrawn": Money(adjustment.amount).to_json(),
        "gift_id": str(adjustment.gift_id),
        "reason": reason,
    }
    session.add(ClaimEvent(claim_id=carrier.id, status=carrier.status, at=at, actor=actor, detail=detail))
    return True


# --- submission ------------------------------------------------------------------------------------------------------


def gateway_client(settings: Settings) -> GovTalkClient:
    return GovTalkClient(
        gateway_url=settings.hmrc.gateway_url,
        sender_id=settings.hmrc.sender_id,
        password=settings.hmrc.password.get_secret_value(),
        vendor_id=settings.hmrc.vendor_id,
        test_mode=settings.hmrc.test_mode,
        charity_reference=settings.charity.hmrc_reference,
    )


def _keep(
    session: Session,
    claim_id: uuid.UUID | None,
    direction: str,
    function: str,
    body: bytes,
    reply: Reply | None = None,
    *,
    error: str = "",
) -> None:
    session.add(
        Message(
            claim_id=claim_id,
            direction=direction,
            function=function,
            qualifier=reply.qualifier if reply else "",
            correlation_id=(reply.correlation_id or None) if reply else None,
            body=body.decode("utf-8", "replace"),
            error=error[:500],
        )
    )


# The error kept on a claim whose submission got no GovTalk answer: HMRC may or may not hold it.
UNANSWERED = "unknown"
# The longest a poll waits for HMRC's PollInterval to pass before asking (HMRC's is usually 10 seconds).
POLL_WAIT_LIMIT_SECONDS = 15
# The error kept on a submitted claim whose polls have had nothing but errors for POLL_ERRORS_STOP_AFTER: the
# sweep stops polling it (a poll by hand still asks) until finance has looked.
POLLING_STOPPED = "polling_stopped"
POLL_ERRORS_STOP_AFTER = dt.timedelta(hours=24)
# The job that deletes HMRC's copy of a decided submission (giftaid.tasks), recorded with the decision. Its message
# waits a minute: a poll by hand tries the delete at once after its commit, and the job then finds it done (the
# sweep's poll job does not try it: its job is due at once).
DELETE_AT_HMRC = "giftaid.delete_at_hmrc"
DELETE_AFTER_MS = 60_000
# HMRC's answers to a delete worth asking again later: a recoverable error, a system failure (1000), or the
# credentials refused (1046: the password changed since the claim was sent). Anything else is final.
_DELETE_AGAIN_ON = {1000, 1046}


def _our_error(kind: str, text: str) -> dict[str, Any]:
    """An error of ours kept on a claim beside HMRC's (the same keys, no number): `unknown`, `polling_stopped`."""
    return {"number": None, "type": kind, "text": text, "location": "", "raised_by": "", "line": None, "gift_ids": []}


def error_words(error: dict[str, Any]) -> str:
    """One kept gateway error as words: HMRC's number and text (ours, for an unanswered submission, has no number)."""
    return f"{error['number']} {error['text']}" if error.get("number") is not None else str(error["text"])


def _locked_claim(
    session: Session, claim_id: uuid.UUID, *, claims_first: bool = False, lock_wait: float | None = None
) -> Claim:
    """The claim's row locked; `claims_first`: after the claims' lock (`repository.lock_claims_then_claim`), waiting
    at most `lock_wait` seconds for the two (else `ClaimsBusy`)."""
    if claims_first:
        try:
            claim = repository.lock_claims_then_claim(session, claim_id, wait_seconds=lock_wait)
        except repository.LockWaitExceeded as exc:
            raise ClaimsBusy(f"claim {claim_id}: {exc} (a claim is being built); try again later") from exc
    else:
        claim = repository.get_claim(session, claim_id, for_update=True)
    if claim is None:
        raise ClaimNotFound(f"no claim {claim_id}")
    return claim


def submit_claim(
    uow: UnitOfWork,
    settings: Settings,
    claim_id: uuid.UUID,
    *,
    actor: str,
    client: GovTalkClient | None = None,
    again: bool = False,
    today: dt.date | None = None,
) -> Claim:
    """Send a built claim to HMRC's gateway (first without the gifts HMRC would now refuse:
    `take_off_what_hmrc_would_refuse`); it becomes `submitted` with the correlation id to poll. If the gateway
    refuses it outright, the claim stays `built` with HMRC's errors (`claim.errors`); the messages are kept either
    way. The claim is locked while it is sent, so two submits at once send it once; so are the claims (the lock
    builds take), so no claim is built while one is sent.

    A submission that reached the gateway but got no GovTalk answer (a timeout, an HTML page) is kept too, and the
    claim stays `built` with an `unknown` error: HMRC may hold it, so it is not sent again unless `again` (finance
    has checked the gateway's list and HMRC does not have it)."""
    session = uow.session
    # The claims' lock too: taking gifts off it (below) needs it.
    claim = _locked_claim(session, claim_id, claims_first=True)
    if ClaimStatus(claim.status) != ClaimStatus.BUILT:
        raise InvalidTransition(f"claim {claim_id} is {claim.status}; only a built claim is submitted")
    if not again and any(error.get("type") == UNANSWERED for error in claim.errors):
        raise InvalidTransition(
            f"an earlier submission of claim {claim_id} may have reached HMRC (no answer came back): check the "
            "gateway's list before sending it again"
        )
    if message_count(claim) > 1:
        raise InvalidClaimRequest("a claim of more than 500,000 lines is sent as several messages: not supported here")
    if again:
        _settle_sent_again(session, claim, actor=actor)
    client = client or gateway_client(settings)
    with tempfile.TemporaryDirectory(prefix="giftaid-submit-") as folder:
        path = Path(folder) / "claim.xml"
        with path.open("w+b") as out:
            _, event = _take_off(session, settings, claim, actor=actor, today=today, sent_again=again)
            _write_xml_part(session, settings, claim, 1, out, check=True)
        # The message is recorded as written once HMRC may have it (an answer, or none): not when it was refused at
        # the door or never left.
        message: list[tuple[PartKind, int, tuple[int, int]]] = [("message", 1, (1, claim.lines))]
        sent_part = functools.partial(
            _record_written, session, claim, message, actor=actor, today=today, via="submit", into=event
        )
        try:
            sent, reply = client.submit(path)
        except GatewayError as exc:
            if not exc.delivered:
                raise SubmissionFailed(str(exc)) from exc
            sent_part()
            _keep(session, claim.id, "sent", "submit", exc.sent)
            _keep(session, claim.id, "received", "submit", exc.received)
            claim.errors = [
                _our_error(
                    UNANSWERED,
                    f"{exc}; HMRC may have received the claim: check the gateway's list before sending again",
                )
            ]
            session.add(claim)
            session.flush()
            return claim
    _keep(session, claim.id, "sent", "submit", sent)
    _keep(session, claim.id, "received", "submit", reply.raw, reply)
    if reply.errors or reply.qualifier != "acknowledgement":
        # Refused at the door (credentials, IRmark, schema): the claim stays built, with HMRC's errors kept.
        claim.errors = _mapped_errors(session, claim, reply)
        session.add(claim)
        session.flush()
        return claim
    if not reply.correlation_id:
        sent_part()
        # HMRC has the claim, but nothing to poll it with: it stays built (a claim submitted without a correlation
        # id would never be polled), and is not sent again until finance has found it in the gateway's list.
        claim.errors = [
            _our_error(
                UNANSWERED,
                "HMRC acknowledged the claim without a CorrelationID to poll it with, so HMRC may hold it: find it in "
                "the gateway's list (giving giftaid gateway-list) before sending it again (--again), or record "
                "HMRC's decision by hand",
            )
        ]
        session.add(claim)
        session.flush()
        return claim
    claim.correlation_id = reply.correlation_id
    claim.response_endpoint = reply.response_endpoint
    claim.poll_interval = reply.poll_interval
    detail: dict[str, Any] = {"correlation_id": claim.correlation_id, "via": "govtalk"}
    # The message sent: recorded with the step that sent it.
    if records := _parts_first_written(session, claim, message, today=today, via="submit"):
        detail[_PARTS_WRITTEN] = records
    # HMRC has it now: an earlier attempt's errors (an `unknown` one, a refusal) no longer stand; the history keeps
    # them.
    detail.update(_cleared_errors(claim))
    session.add(claim)
    return change_status(uow, claim.id, ClaimStatus.SUBMITTED, actor=actor, detail=detail)


def _cleared_errors(claim: Claim) -> dict[str, Any]:
    """Clear a claim's errors, saying in words what they were (for the history of the step that cleared them)."""
    earlier = [error_words(error)[:500] for error in claim.errors]
    claim.errors = []
    return {"earlier_errors": earlier} if earlier else {}


# A GovTalk CorrelationID as HMRC gives it (32 hexadecimal characters; letters and digits are accepted).
_CORRELATION_ID = re.compile(r"[0-9A-Za-z]{1,32}")


def attach_correlation_id(uow: UnitOfWork, claim_id: uuid.UUID, correlation_id: str, *, actor: str) -> Claim:
    """Attach the correlation id finance recovered from the gateway's list (`giving giftaid gateway-list`) to a
    claim whose submission got no usable answer (built, with an `unknown` error): it becomes `submitted` with that
    id, recorded in its history with who and when, and is then polled as after HMRC's acknowledgement. Refused for
    any other claim, and for an id another claim already has."""
    session = uow.session
    text = correlation_id.strip()
    if not _CORRELATION_ID.fullmatch(text):
        raise InvalidClaimRequest(
            f"{correlation_id!r} is not a correlation id: 1 to 32 letters and digits, as giving giftaid gateway-list "
            "shows it"
        )
    claim = _locked_claim(session, claim_id)
    status = ClaimStatus(claim.status)
    if status != ClaimStatus.BUILT or not any(error.get("type") == UNANSWERED for error in claim.errors):
        raise InvalidTransition(
            f"claim {claim_id} is {status.value} and not waiting on a submission that got no answer: there is no "
            "lost correlation id to attach"
        )
    holder = repository.claim_with_correlation_id(session, text)
    if holder is not None and holder.id != claim.id:
        raise InvalidTransition(f"correlation id {text} is already claim {holder.id}'s")
    claim.correlation_id = text
    claim.response_endpoint = None  # polled at the gateway's address
    claim.poll_interval = None
    detail: dict[str, Any] = {"correlation_id": text, "via": "attached"}
    detail.update(_cleared_errors(claim))
    session.add(claim)
    return change_status(uow, claim.id, ClaimStatus.SUBMITTED, actor=actor, detail=detail)


def _mapped_errors(session: Session, claim: Claim, reply: Reply) -> list[dict[str, Any]]:
    """HMRC's errors, each with the gift ids of the GAD line it points at."""
    lines = sorted({e.gad_index for e in reply.errors if e.gad_index is not None})
    gifts = repository.gift_ids_on_lines(session, claim.id, lines)
    return [
        {
            "number": error.number,
            "type": error.type,
            "text": error.text,
            "location": error.location,
            "raised_by": error.raised_by,
            "line": error.gad_index,
            "gift_ids": [str(g) for g in gifts.get(error.gad_index or -1, [])],
        }
        for error in reply.errors
    ]


def poll_claim(
    uow: UnitOfWork,
    settings: Settings,
    claim_id: uuid.UUID,
    *,
    actor: str,
    client: GovTalkClient | None = None,
    lock_wait: float | None = None,
    delete_now: bool = True,
) -> Claim:
    """Ask HMRC how a submitted claim went: still pending (nothing changes), accepted (with HMRC's IRmark receipt)
    or rejected (errors mapped to gifts; the gifts are released). HMRC's copy is deleted only once the verdict is
    committed (`change_status` records the delete job; it is tried at once after the commit). A gateway or
    recoverable error on the poll changes nothing but the errors shown on the claim; after a day of nothing but
    errors the claim says the sweep has stopped polling it.

    `lock_wait`: wait at most that many seconds for the locks (behind a claim being built), else `ClaimsBusy`
    having asked HMRC nothing (the sweep's job leaves the claim to its next poll).

    `delete_now=False` (the sweep's poll job, whose time limit the lock wait, the PollInterval and the poll itself
    already fill): the delete is not tried after the commit; its job, recorded with the verdict, is due at once and
    sends it on its own (retried on its own)."""
    session = uow.session
    # Locked: two polls at once would both ask, and the later one's "unknown correlation id" (HMRC deleted its
    # answer for the first) would overwrite the verdict's errors. The claims' lock too: HMRC's verdict may reject the
    # claim (`change_status`). A build waits for a poll, and a poll for a build (the sweep's, for a while only).
    claim = _locked_claim(session, claim_id, claims_first=True, lock_wait=lock_wait)
    if ClaimStatus(claim.status) != ClaimStatus.SUBMITTED or not claim.correlation_id:
        raise InvalidTransition(f"claim {claim_id} is not waiting for HMRC")
    if claim.poll_interval:
        # GovTalk: ask only once HMRC's PollInterval has passed since we last sent. A short wait is waited out;
        # a longer one asks nothing now (the claim is returned as it is, still waiting).
        last = repository.last_sent_at(session, claim.id, ("submit", "poll"))
        wait = (last + dt.timedelta(seconds=claim.poll_interval) - utc_now()).total_seconds() if last else 0.0
        if wait > POLL_WAIT_LIMIT_SECONDS:
            return claim
        if wait > 0:
            time.sleep(wait)
    client = client or gateway_client(settings)
    try:
        sent, reply = client.poll(claim.correlation_id, claim.response_endpoint)
    except GatewayError as exc:
        raise SubmissionFailed(str(exc)) from exc
    _keep(session, claim.id, "sent", "poll", sent, reply)
    _keep(session, claim.id, "received", "poll", reply.raw, reply)
    if reply.pending:
        claim.poll_interval = reply.poll_interval or claim.poll_interval
        claim.response_endpoint = reply.response_endpoint or claim.response_endpoint
        claim.errors = []  # HMRC answered: an earlier poll's errors (and a stop) no longer stand
        session.add(claim)
        session.flush()
        return claim
    if not reply.accepted and not reply.rejected:
        # Not HMRC's verdict on the claim (the gateway refused the poll, or a recoverable error): the claim stays
        # submitted with its gifts claimed, and HMRC's copy stays to be polled again; the errors are shown on it.
        _poll_failed(uow, claim, reply, actor=actor)
        return claim
    delete_after_ms = DELETE_AFTER_MS if delete_now else 0
    if reply.accepted:
        claim.hmrc_receipt = reply.receipt[:2000]
        claim.errors = []
        session.add(claim)
        result = change_status(
            uow,
            claim.id,
            ClaimStatus.ACCEPTED,
            actor=actor,
            detail={"receipt": reply.receipt[:500]},
            delete_after_ms=delete_after_ms,
        )
    else:
        claim.errors = _mapped_errors(session, claim, reply)
        session.add(claim)
        reason = "; ".join(f"{e.number} {e.text}" for e in reply.errors[:3]) or "HMRC returned an error"
        result = change_status(
            uow,
            claim.id,
            ClaimStatus.REJECTED,
            actor=actor,
            reason=reason,
            detail={"errors": len(reply.errors)},
            delete_after_ms=delete_after_ms,
        )
    # HMRC's answer goes only once ours is kept: the delete is sent after the commit (the job recorded with the
    # verdict covers a failure, or a crash, in between), or by that job alone.
    if delete_now:
        uow.on_commit(lambda: _delete_at_hmrc_now(settings, claim_id, client))
    return result


def polling_stopped(claim: Claim) -> bool:
    """Whether the sweep has stopped polling this claim (a day of errors): finance polls it by hand."""
    return any(error.get("type") == POLLING_STOPPED for error in claim.errors)


def _poll_failed(uow: UnitOfWork, claim: Claim, reply: Reply, *, actor: str) -> None:
    """Show a poll's errors on the claim; once the polls have had nothing but errors for POLL_ERRORS_STOP_AFTER, say
    that the sweep stops polling it (and in its history, once), so finance acts."""
    session = uow.session
    was_stopped = polling_stopped(claim)
    claim.errors = _mapped_errors(session, claim, reply)
    session.add(claim)
    session.flush()
    since = repository.poll_errors_since(session, claim.id)
    now = utc_now()
    if since is not None and now - since >= POLL_ERRORS_STOP_AFTER:
        words = (
            f"every poll since {since.astimezone(dt.UTC):%d/%m/%Y %H:%M} UTC has had an error from HMRC's gateway, "
            "so it is no longer polled every 15 minutes: check the claim with HMRC (giving giftaid gateway-list), "
            f"then poll it by hand (giving giftaid poll {claim.id}) or record HMRC's decision"
        )
        claim.errors = [*claim.errors, _our_error(POLLING_STOPPED, words)]
        session.add(claim)
        if not was_stopped:
            detail = {"polling_stopped": since.isoformat(), "reason": words}
            session.add(ClaimEvent(claim_id=claim.id, status=claim.status, at=now, actor=actor, detail=detail))
    session.flush()


def _delete_at_hmrc_now(settings: Settings, claim_id: uuid.UUID, client: GovTalkClient | None) -> None:
    """Right after a verdict's commit, in a unit of work of its own: the delete, at once. A failure only logs (the
    verdict is committed; the delete job recorded with it asks again)."""
    from core.runtime import get_runtime

    try:
        with get_runtime().unit_of_work() as uow:
            result = delete_at_hmrc(uow, settings, claim_id, client=client)
    except Exception:
        log.warning("HMRC's copy of claim %s was not deleted yet; its job will ask again", claim_id, exc_info=True)
        return
    if result.retry_error:
        log.warning("%s; its job will ask again", result.retry_error)


@dataclass(frozen=True)
class DeleteResult:
    """What a delete of HMRC's copy did: `sent` whether a delete went to the gateway; `retry_error` (the attempt is
    kept with the claim all the same) when it is worth asking again, which the job does by failing after its
    commit."""

    sent: bool
    retry_error: str = ""


def delete_at_hmrc(
    uow: UnitOfWork, settings: Settings, claim_id: uuid.UUID, *, client: GovTalkClient | None = None
) -> DeleteResult:
    """Delete HMRC's copy of a decided claim's submission (HMRC's answer, which we have). Nothing is sent for a
    claim not sent through the gateway, not decided, or whose delete HMRC has already answered (so a second run, or
    a duplicate job, is harmless); an answer saying HMRC holds no such submission is final too.

    Every attempt is kept with the claim, a failed one too (what was sent, what came back, and the error): when it
    is worth asking again (no answer, a recoverable error, the credentials refused) the result says why
    (`retry_error`) instead of raising, so the caller's unit of work keeps the attempt and the job fails after it."""
    session = uow.session
    claim = _locked_claim(session, claim_id)
    decided = ClaimStatus(claim.status) not in (ClaimStatus.BUILT, ClaimStatus.SUBMITTED)
    if not claim.correlation_id or not decided or repository.delete_answered(session, claim.id):
        return DeleteResult(sent=False)
    client = client or gateway_client(settings)
    try:
        sent, reply = client.delete(claim.correlation_id, claim.response_endpoint)
    except GatewayError as exc:
        error = f"HMRC's copy of claim {claim_id} was not deleted: {exc}"
        _keep(session, claim.id, "sent", "delete", exc.sent, error=error)
        if exc.received:
            _keep(session, claim.id, "received", "delete", exc.received, error=error)
        session.flush()
        return DeleteResult(sent=exc.delivered, retry_error=error)
    error = ""
    if reply.qualifier == "error" and any(
        error.type == "recoverable" or error.number in _DELETE_AGAIN_ON for error in reply.errors
    ):
        words = "; ".join(f"{e.number} {e.text}" for e in reply.errors)
        error = f"HMRC's copy of claim {claim_id} was not deleted: {words}"
    _keep(session, claim.id, "sent", "delete", sent, reply, error=error)
    _keep(session, claim.id, "received", "delete", reply.raw, reply, error=error)
    session.flush()
    return DeleteResult(sent=True, retry_error=error)


def record_delete_given_up(uow: UnitOfWork, claim_id: uuid.UUID, error: str) -> None:
    """The claim's history: HMRC's copy of its submission could not be deleted (the delete job gave up)."""
    claim = repository.get_claim(uow.session, claim_id)
    if claim is None:
        return
    reason = f"HMRC's copy of the submission could not be deleted (HMRC clears old answers in time): {error}"
    detail = {"hmrc_copy_not_deleted": True, "reason": reason[:500]}
    uow.session.add(
        ClaimEvent(claim_id=claim.id, status=claim.status, at=utc_now(), actor="system:delete", detail=detail)
    )


def gateway_status(uow: UnitOfWork, settings: Settings, *, client: GovTalkClient | None = None) -> Reply:
    """HMRC's list of our recent submissions (to recover a lost correlation id)."""
    client = client or gateway_client(settings)
    try:
        sent, reply = client.list()
    except GatewayError as exc:
        raise SubmissionFailed(str(exc)) from exc
    _keep(uow.session, None, "sent", "list", sent, reply)
    _keep(uow.session, None, "received", "list", reply.raw, reply)
    return reply


def claim_messages(session: Session, claim_id: uuid.UUID) -> list[Message]:
    return repository.messages_of(session, claim_id)
