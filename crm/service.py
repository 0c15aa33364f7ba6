"""Use cases of crm. Never commits: the caller's unit of work does.

Other packages write to a supporter's timeline only through `record_history`, and find supporters through
`find_or_create_supporter` / `resolve_supporter`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from core import signing
from core.clock import add_years, uk_date, uk_today, utc_now
from core.db import UnitOfWork, is_postgres
from core.money import Money
from crm import repository
from crm.errors import (
    BadCursor,
    CannotMergeErased,
    CannotMergeIntoItself,
    DeclarationAlreadyCancelled,
    DeclarationNotFound,
    InvalidDonorDetails,
    ReviewItemNotFound,
    SubscriptionLinkExpired,
    SubscriptionNotFound,
    SupporterErased,
    SupporterNotFound,
)
from crm.models import (
    Consent,
    ConsentChannel,
    ConsentStatus,
    Declaration,
    DeclarationMethod,
    DeclarationScope,
    HistoryEntry,
    Interest,
    PendingSubscription,
    ReviewItem,
    StatementPreference,
    Supporter,
    SupporterAddress,
    Wording,
)
from crm.validation import (
    MAX_INTEREST_NOTE,
    MAX_NAME,
    MAX_STAFF_NOTE,
    DonorDetails,
    clean_name,
    clean_text,
    house_from_line1,
    is_non_uk,
    normalise_email,
    normalise_postcode,
    overseas_house,
    refuse_too_long,
)

log = logging.getLogger("giving.crm")

ORAL_CANCELLATION_WINDOW = dt.timedelta(days=30)
INTEREST_KIND = re.compile(r"^[a-z][a-z_]{1,31}$")
UK_POSTCODE_CHARS = re.compile(r"^[A-Za-z]{1,2}[0-9][0-9A-Za-z]?[0-9][A-Za-z]{2}$")


def resolve_supporter(session: Session, supporter_id: uuid.UUID) -> Supporter:
    """The supporter, following merges: an old id keeps resolving to the survivor."""
    seen: set[uuid.UUID] = set()
    current = session.get(Supporter, supporter_id)
    while current is not None and current.merged_into_id is not None and current.id not in seen:
        seen.add(current.id)
        current = session.get(Supporter, current.merged_into_id)
    if current is None:
        raise SupporterNotFound(f"no supporter {supporter_id}")
    return current


def recordable_supporter(session: Session, supporter_id: uuid.UUID) -> Supporter:
    """The supporter (merges followed) that staff are about to record something on: 409 when it was erased, whose
    record must hold no personal data (a note, an interest's or a consent's words, a declaration's name and
    address would put some back)."""
    supporter = resolve_supporter(session, supporter_id)
    if supporter.erased_at is not None:
        raise SupporterErased(f"supporter {supporter.id} was erased: nothing more is recorded about them")
    return supporter


def find_or_create_supporter(
    uow: UnitOfWork,
    details: DonorDetails,
    *,
    source: str,
    statement_preference: StatementPreference = StatementPreference.PER_GIFT,
) -> Supporter:
    """Find by normalised email, or create. Donors without email always get a new record (staff can merge).
    A new supporter starts with `statement_preference` (`[receipts] default_preference`).

    A different name arriving on a known email (couples often share one) raises a review item instead of
    overwriting the record. A new address becomes the current one; the old one keeps its history.
    """
    now = utc_now()
    supporter, created = _found_or_inserted(
        uow,
        details.email,
        lambda: Supporter(
            email=details.email,
            title=details.title,
            first_name=details.first_name,
            last_name=details.last_name,
            postcode=details.postcode or None,
            statement_preference=statement_preference,
            created_at=now,
            updated_at=now,
        ),
    )
    if not created and not _name_given(
        uow,
        supporter,
        details.first_name,
        details.last_name,
        title=details.title,
        detail=f"{details.first_name} {details.last_name} gave with the email of",
        data={"given": details.as_dict(), "source": source},
    ):
        return supporter
    if details.address_line1 or details.postcode:
        update_address(uow, supporter, details, source=source)
    return supporter


def _found_or_inserted(uow: UnitOfWork, email: str | None, build: Callable[[], Supporter]) -> tuple[Supporter, bool]:
    """The supporter with this (normalised) email, merges followed, or the new one `build` makes; whether it is
    new. The insert runs in a savepoint: of two forms for a new email at the same moment, the one that loses the
    race on the unique email finds the other's record, and its transaction stays usable."""
    session = uow.session
    found = _live_by_email(session, email) if email else None
    if found is None:
        new = build()
        try:
            with session.begin_nested():
                session.add(new)
        except IntegrityError:
            found = _live_by_email(session, email) if email else None
            if found is None:
                raise
        else:
            return new, True
    return found, False


def _live_by_email(session: Session, email: str) -> Supporter | None:
    """The record with this email, merges followed, locked and re-read: an erasure (or merge) of it committing
    meanwhile is seen, and none starts until this transaction ends, so nothing given here lands on a record that was
    just erased (PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers anyway). None when there is none, or it
    was erased meanwhile (its email is gone: the giver becomes a new record)."""
    found = repository.supporter_by_email(session, email)
    while found is not None:
        locked = repository.lock_supporter(session, resolve_supporter(session, found.id).id)
        if locked.merged_into_id is None:
            return None if locked.erased_at is not None else locked
        found = locked  # merged meanwhile: lock the record it went into
    return None


def bears_name(supporter: Supporter, first: str, last: str) -> bool:
    """Whether the record is known by this name (case aside): no name given says nothing against it."""
    if not (first or last):
        return True
    return (first.casefold(), last.casefold()) == (supporter.first_name.casefold(), supporter.last_name.casefold())


def _name_given(
    uow: UnitOfWork,
    supporter: Supporter,
    first: str,
    last: str,
    *,
    title: str | None = None,
    detail: str,
    data: dict[str, Any],
) -> bool:
    """A name arriving with a known email. A record known by email only (a newsletter sign-up) takes it; a
    different name (couples often share an email) raises a review item instead of overwriting: returns False."""
    if not (first or last):
        return True
    if not (supporter.first_name or supporter.last_name):
        supporter.title = supporter.title or title
        supporter.first_name, supporter.last_name, supporter.updated_at = first, last, utc_now()
        uow.session.add(supporter)
        return True
    if bears_name(supporter, first, last):
        return True
    raise_review_item(
        uow,
        supporter.id,
        kind="name_mismatch",
        detail=f"{detail} {supporter.first_name} {supporter.last_name}",
        data=data,
    )
    return False


def update_address(uow: UnitOfWork, supporter: Supporter, details: DonorDetails, *, source: str) -> None:
    """Make this the current address unless it already is; the previous one is closed, not overwritten."""
    session = uow.session
    current = repository.current_address(session, supporter.id)
    new = (details.address_line1, details.address_line2, details.town, details.postcode, details.country)
    if current is not None and (current.line1, current.line2, current.town, current.postcode, current.country) == new:
        return
    now = utc_now()
    if current is not None:
        current.valid_to = now
        session.add(current)
    session.add(
        SupporterAddress(
            supporter_id=supporter.id,
            line1=details.address_line1,
            line2=details.address_line2,
            town=details.town,
            postcode=details.postcode,
            country=details.country,
            valid_from=now,
            source=source,
        )
    )
    supporter.postcode = details.postcode or None
    supporter.updated_at = now
    session.add(supporter)
    session.flush()


def address_on(session: Session, supporter_id: uuid.UUID, moment: dt.datetime) -> SupporterAddress | None:
    """The address in force at a moment (each gift uses the address of its date)."""
    return repository.address_at(session, supporter_id, moment)


# What an erased supporter's history keeps: each item's type, time, amount and ids; not its words (which may name
# people). Items written after the erasure (a late webhook, the job cancelling their regular gift) are kept the same.
HISTORY_DATA_KEPT = frozenset(
    {
        "gift_id",
        "refund_id",
        "order_id",
        "dispute_id",
        "declaration_id",
        "document_id",
        "provider_ids",
        "merged_id",
        "into_id",
        "regular_gift_id",
        "consent_id",
        "channel",
        "status",
    }
)


def erased_history_item(type: str, data: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """An erased supporter's history item: its summary and data without words."""
    kept = {key: value for key, value in (data or {}).items() if key in HISTORY_DATA_KEPT}
    return f"{type.replace('_', ' ').capitalize()} (details erased)", kept


def record_history(
    uow: UnitOfWork,
    supporter_id: uuid.UUID,
    *,
    type: str,
    summary: str,
    at: dt.datetime | None = None,
    amount: int | None = None,
    currency: str | None = None,
    data: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> bool:
    """Add an item to a supporter's timeline. With a `dedupe_key` (e.g. "gift:<id>"), writing the same business
    event again changes nothing. Returns whether an item was written. An id that was merged writes to the
    survivor's timeline (a late webhook may still name the old id). A supporter who was erased gets the item
    without its words (`erased_history_item`), decided inside the same INSERT."""
    erased_summary, erased_data = erased_history_item(type, data)
    written = repository.insert_history_once(
        uow.session,
        {
            "id": uuid.uuid4(),
            "supporter_id": supporter_id,
            "at": at or utc_now(),
            "type": type,
            "summary": summary[:500],
            "amount": amount,
            "currency": currency,
            "data": data or {},
            "dedupe_key": dedupe_key,
            "created_at": utc_now(),
            "erased_summary": erased_summary,
            "erased_data": erased_data,
        },
        to_survivor=True,
    )
    if not written:
        resolve_supporter(uow.session, supporter_id)  # nothing written: a repeat, or no such supporter (raises)
    return written


def revise_history(
    uow: UnitOfWork,
    dedupe_key: str,
    *,
    summary: str,
    data: dict[str, Any],
    amount: int | None = None,
    at: dt.datetime | None = None,
) -> bool:
    """Say better what an item already on a timeline recorded (the same business event, its key unchanged): a
    provider's later event can carry the cause an earlier one lacked. Returns whether there was such an item (an
    erased supporter's is revised without words, as `erased_history_item` keeps it).

    With `at`, the item is re-dated only if that is earlier than its time: events of one business event processed
    out of order each date it by their own time, and the earliest is when it happened."""
    item = repository.history_item_by_key(uow.session, dedupe_key)
    if item is None:
        return False
    if item.erased:
        summary, data = erased_history_item(item.type, data)
    values: dict[str, Any] = {"summary": summary[:500], "data": data}
    if amount is not None:
        values["amount"] = amount
    return repository.revise_history(uow.session, dedupe_key, values, no_later_than=at)


def raise_review_item(
    uow: UnitOfWork,
    supporter_id: uuid.UUID,
    *,
    kind: str,
    detail: str,
    data: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> ReviewItem | None:
    session = uow.session
    if dedupe_key is not None and repository.review_item_exists(session, dedupe_key):
        return None
    item = ReviewItem(supporter_id=supporter_id, kind=kind, detail=detail[:500], data=data or {}, dedupe_key=dedupe_key)
    session.add(item)
    session.flush()
    return item


def record_consent(
    uow: UnitOfWork,
    supporter_id: uuid.UUID,
    *,
    channel: ConsentChannel,
    status: ConsentStatus,
    source: str,
    wording_version: str = "",
    wording_text: str | None = None,
    evidence: dict[str, Any] | None = None,
) -> Consent:
    """A change of consent with its provenance, shown as one `consent` item in the history.

    `wording_text`: the words the person agreed to, kept with `wording_version` (`keep_wording`); without them, the
    words last kept under that version, if any."""
    wording = None
    if wording_text or wording_version:
        wording = keep_wording(uow.session, wording_version, wording_text or None)
    consent = Consent(
        supporter_id=supporter_id,
        channel=channel,
        status=status,
        source=source,
        wording_version=wording_version,
        wording_id=wording.id if wording is not None else None,
        evidence=evidence or {},
    )
    uow.session.add(consent)
    uow.session.flush()
    if status != ConsentStatus.PENDING:
        verb = "granted" if status == ConsentStatus.GRANTED else "withdrew"
        record_history(
            uow,
            supporter_id,
            type="consent",
            summary=f"{verb.capitalize()} {channel.value} consent ({source})",
            at=consent.at,
            data={"consent_id": str(consent.id), "channel": channel.value, "status": status.value, "source": source},
            dedupe_key=f"consent:{consent.id}",
        )
    return consent


def has_granted(session: Session, supporter_id: uuid.UUID, channel: ConsentChannel) -> bool:
    """Whether the consent in force on this channel is a grant."""
    current = repository.current_consents(session, supporter_id).get(channel)
    return current is not None and current.status == ConsentStatus.GRANTED


def email_updates_wording(charity_name: str) -> str:
    """What a person agrees to when asking for email updates: the label of the donate and shop forms' tick box (a
    template global of payments' pages), and the words the subscribe page and its confirmation email quote. One
    source for the words shown and the words kept with the consent (`record_consent(wording_text=)`)."""
    return f"Yes, email me news of the work of {charity_name} and how to help (you can unsubscribe at any time)"


def consent_words(session: Session, consents: Iterable[Consent]) -> dict[uuid.UUID, str]:
    """The kept words of these consents, by wording id."""
    return repository.wording_texts(session, list({c.wording_id for c in consents if c.wording_id is not None}))


def enduring_declaration_wording(charity_name: str) -> str:
    """HMRC's model enduring declaration, as the donate and shop forms show it and as staff read or send it: one
    source for the words shown and the words kept (`keep_wording`)."""
    return (
        f"I want to Gift Aid my donation and any donations I make in the future or have made in the past 4 years to "
        f"{charity_name}. I am a UK taxpayer and understand that if I pay less Income Tax and/or Capital Gains Tax "
        f"than the amount of Gift Aid claimed on all my donations in that tax year it is my responsibility to pay "
        f"any difference."
    )


def keep_wording(session: Session, version: str, text: str | None) -> Wording | None:
    """The kept words of a declaration wording: these words under this version, kept now if they are new (two
    first uses at once keep one row); with no words, the last kept under the version (None if there are none)."""
    if text is None:
        return repository.latest_wording(session, version)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    found = repository.wording(session, version, digest)
    if found is not None:
        return found
    new = Wording(version=version, text=text, digest=digest)
    try:
        with session.begin_nested():
            session.add(new)
    except IntegrityError:
        found = repository.wording(session, version, digest)
        if found is None:
            raise
        return found
    return new


def declaration_words(session: Session, declarations: list[Declaration]) -> dict[uuid.UUID, str]:
    """The kept words of these declarations, by wording id."""
    return repository.wording_texts(session, list({d.wording_id for d in declarations if d.wording_id is not None}))


def record_declaration(
    uow: UnitOfWork,
    supporter_id: uuid.UUID,
    *,
    method: DeclarationMethod,
    made_on: dt.date,
    scope: DeclarationScope,
    donor: DonorDetails,
    source: str,
    wording_version: str,
    wording_text: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    gift_id: uuid.UUID | None = None,
    confirmation_sent_on: dt.date | None = None,
    evidence: dict[str, Any] | None = None,
    recorded_by: str = "",
    given_with_gift: bool = False,
) -> Declaration:
    """A Gift Aid declaration with the name and address given with it, checked now so a claim never finds bad
    data. `donor` must already be normalised (`DonorDetails.normalised(require_address=True)`).

    `wording_text`: the words the donor was shown or read, kept with `wording_version` (`keep_wording`); without
    them, the words last kept under that version.

    `given_with_gift`: a `this_gift` declaration made on a form with a gift not recorded yet (a checkout); it names
    no gift, and covers the gifts that name it (`declaration_id`: the checkout's gift, or a monthly gift's
    instalments)."""
    errors: dict[str, str] = {}
    if not donor.address_line1:
        errors["address_line1"] = "A Gift Aid declaration needs the house name or number"
    if not is_non_uk(donor.country, donor.postcode) and not donor.postcode:
        errors["postcode"] = "A Gift Aid declaration needs a UK postcode"
    if scope == DeclarationScope.PERIOD and (start is None or end is None or end < start):
        errors["scope"] = "A declaration for a period needs a start and an end on or after it"
    if scope == DeclarationScope.THIS_GIFT and gift_id is None and not given_with_gift:
        errors["gift_id"] = "A declaration for one gift names the gift"
    elif scope == DeclarationScope.THIS_GIFT and gift_id is not None:
        problem = _named_gift_problem(uow.session, supporter_id, gift_id)
        if problem:
            errors["gift_id"] = problem
    # What the scope does not use would be kept and shown as a limit Gift Aid never applies (an end on "all future
    # gifts"): refused, not dropped, since the box or the scope may be the mistake.
    if start is not None and scope not in (DeclarationScope.PERIOD, DeclarationScope.PAST_4_YEARS_AND_FUTURE):
        errors["start"] = "Only a declaration for a period, or for the past four years and the future, has a start"
    if end is not None and scope != DeclarationScope.PERIOD:
        errors["end"] = "Only a declaration for a period has an end"
    if gift_id is not None and scope != DeclarationScope.THIS_GIFT:
        errors["gift_id"] = "Only a declaration for one gift names a gift"
    if made_on > uk_today():
        errors["made_on"] = "A declaration cannot be made in the future"
    elif made_on.year < 1900:
        errors["made_on"] = "Enter a real date for when the declaration was made"
    if confirmation_sent_on is not None and confirmation_sent_on < made_on:
        errors["confirmation_sent_on"] = "The confirmation cannot be sent before the declaration was made"
    elif confirmation_sent_on is not None and confirmation_sent_on > uk_today():
        # As when confirming later: a letter not sent yet cannot make the declaration effective.
        errors["confirmation_sent_on"] = "The confirmation cannot have been sent in the future"
    # A declaration reaches back to gifts of the past four years at most (HMRC; giftaid.md §1C rule 11).
    earliest = add_years(made_on, -4) if "made_on" not in errors else made_on
    if start is not None and start < earliest:
        errors["start"] = f"A declaration covers gifts of the past four years at most: from {earliest:%d/%m/%Y}"
    wording = keep_wording(uow.session, wording_version, wording_text) if wording_version else None
    if wording_version and wording is None:
        errors["wording_text"] = (
            f"Giving has not kept the words of declaration wording {wording_version!r} yet: give them with it"
        )
    if errors:
        raise InvalidDonorDetails("; ".join(f"{k}: {v}" for k, v in errors.items()), errors)
    if scope == DeclarationScope.PAST_4_YEARS_AND_FUTURE and start is None:
        start = earliest
    non_uk = is_non_uk(donor.country, donor.postcode)
    declaration = Declaration(
        supporter_id=resolve_supporter(uow.session, supporter_id).id,
        method=method,
        made_on=made_on,
        scope=scope,
        start=start,
        end=end,
        gift_id=gift_id,
        title=donor.title,
        first_name=donor.first_name,
        last_name=donor.last_name,
        address_line1=donor.address_line1,
        address_line2=donor.address_line2,
        town=donor.town,
        house=(
            overseas_house(donor.address_line1, donor.address_line2, donor.town, donor.postcode)
            if non_uk
            else house_from_line1(donor.address_line1)
        ),
        postcode=donor.postcode,
        country=donor.country,
        non_uk=non_uk,
        wording_version=wording_version,
        wording_id=wording.id if wording is not None else None,
        source=source,
        evidence=evidence or {},
        confirmation_sent_on=confirmation_sent_on,
        recorded_by=recorded_by,
    )
    uow.session.add(declaration)
    uow.session.flush()
    record_history(
        uow,
        supporter_id,
        type="declaration",
        summary=f"Gift Aid declaration ({method.value}, {scope.value.replace('_', ' ')}) made {made_on:%d/%m/%Y}",
        data={"declaration_id": str(declaration.id), "method": method.value, "scope": scope.value},
        dedupe_key=f"declaration:{declaration.id}",
    )
    if method == DeclarationMethod.ORAL and confirmation_sent_on is None:
        # An oral declaration takes effect only once its written confirmation is sent (giftaid.md §1C.13).
        uow.enqueue("receipts.issue_oral_confirmation", declaration_id=str(declaration.id))
    return declaration


# --- gifts (payments says whose a gift is, through the composition root) -------------------------------------

GiftOwner = Callable[[Session, uuid.UUID], uuid.UUID | None]
_gift_owners: list[GiftOwner] = []


def register_gift_owner(lookup: GiftOwner) -> None:
    """Let the wing that records gifts say whose a gift is (`lookup(session, gift_id)` → supporter id, or None for
    no such gift) without crm importing it: a declaration for one gift is then checked against it."""
    if lookup not in _gift_owners:
        _gift_owners.append(lookup)


def _named_gift_problem(session: Session, supporter_id: uuid.UUID, gift_id: uuid.UUID) -> str | None:
    """Why a declaration for one gift cannot name this one: a gift we do not have, or another supporter's (merged
    records count as one). None when it may, or when no wing that records gifts is wired in."""
    for lookup in _gift_owners:
        owner = lookup(session, gift_id)
        if owner is None:
            return f"there is no gift {gift_id}"
        if resolve_supporter(session, owner).id != resolve_supporter(session, supporter_id).id:
            return f"gift {gift_id} is another supporter's"
    return None


# --- declarations' consequences (reported by other wings through registered watchers) -----------------------

DeclarationWatcher = Callable[[UnitOfWork, uuid.UUID], Callable[[Declaration], Mapping[str, Any]]]
_declaration_watchers: list[DeclarationWatcher] = []


def register_declaration_watcher(watcher: DeclarationWatcher) -> None:
    """Let another wing report what a change to a supporter's declarations changed for it, without crm importing
    it: `watcher(uow, supporter_id)` looks before the change and returns a function that, given the declaration
    after it, says what changed (giftaid: which gifts became claimable or stopped being so)."""
    if watcher not in _declaration_watchers:
        _declaration_watchers.append(watcher)


def reporting_changes(
    uow: UnitOfWork, supporter_id: uuid.UUID, change: Callable[[], Declaration]
) -> tuple[Declaration, dict[str, Any]]:
    """Record, cancel or confirm a declaration (`change`) and gather what the registered wings report of it."""
    finishers = [watch(uow, supporter_id) for watch in _declaration_watchers]
    declaration = change()
    report: dict[str, Any] = {}
    for finish in finishers:
        report.update(finish(declaration))
    return declaration, report


# --- totals (filled in by other wings through registered providers) -----------------------------------------

TotalsProvider = Callable[[Session, list[uuid.UUID]], Mapping[str, Any]]
TOTAL_MONEY_KEYS = ("donated", "gift_aid_claimable", "gift_aid_claimed", "purchases")
_totals_providers: list[TotalsProvider] = []


def register_totals_provider(provider: TotalsProvider) -> None:
    """Let another wing add to a supporter's totals without crm importing it. A provider is called as
    `provider(session, supporter_ids)` and returns some of `donated`, `gift_aid_claimable`, `gift_aid_claimed`,
    `purchases` (Money, or pence as int) and `regular_gifts` (a count of the running ones: active or in arrears);
    the composition root registers them."""
    if provider not in _totals_providers:
        _totals_providers.append(provider)


def supporter_totals(session: Session, supporter_id: uuid.UUID) -> dict[str, Any]:
    """What a supporter gave, bought and is owed in Gift Aid, over the survivor and every id merged into it
    (rows move at a merge, so nothing is counted twice; the merged ids only catch a wing that could not move)."""
    ids = [supporter_id, *repository.merged_into(session, supporter_id)]
    totals: dict[str, Any] = {key: Money.zero() for key in TOTAL_MONEY_KEYS}
    totals["regular_gifts"] = 0
    for provider in _totals_providers:
        for key, value in provider(session, ids).items():
            if key == "regular_gifts":
                totals[key] += int(value)
            elif key in TOTAL_MONEY_KEYS:
                totals[key] = totals[key] + (value if isinstance(value, Money) else Money(int(value)))
    return totals


# --- reading supporters --------------------------------------------------------------------------------------


def find_supporters(
    session: Session, *, email: str | None = None, q: str | None = None, limit: int = 50, offset: int = 0
) -> list[Supporter]:
    """`email`: the one supporter with that exact (normalised) email, following merges. `q`: words that start a
    name, email or postcode; an email address is matched exactly; `limit` of them after the first `offset`."""
    if email is not None:
        found = repository.supporter_by_email(session, normalise_email(email))
        return [resolve_supporter(session, found.id)] if found else []
    words = [w for w in unicodedata.normalize("NFKC", q or "").split() if w]
    if not words:
        raise InvalidDonorDetails("give ?email= or ?q= (a name, email or postcode)", {"q": "Enter something to find"})
    if len(words) == 1 and "@" in words[0]:
        try:
            return find_supporters(session, email=words[0])[offset:]
        except InvalidDonorDetails:
            pass
    if len(words) <= 2 and UK_POSTCODE_CHARS.match("".join(words)):
        try:
            return repository.supporters_with_postcode(session, normalise_postcode("".join(words)), limit, offset)
        except InvalidDonorDetails:
            pass
    return repository.search_supporters(session, words[:5], limit, offset)


def get_supporter(session: Session, supporter_id: uuid.UUID) -> SupporterView:
    supporter = resolve_supporter(session, supporter_id)
    consents = repository.current_consents(session, supporter.id)
    return SupporterView(
        supporter=supporter,
        address=repository.current_address(session, supporter.id),
        consents=consents,
        interests=repository.interests_of(session, supporter.id),
        merged_ids=repository.merged_into(session, supporter.id),
        consent_words=consent_words(session, consents.values()),
    )


@dataclass
class SupporterView:
    supporter: Supporter
    address: SupporterAddress | None
    consents: dict[ConsentChannel, Consent]
    interests: list[Interest]
    merged_ids: list[uuid.UUID]
    # The kept words of the consents, by wording id (`consent_words`).
    consent_words: dict[uuid.UUID, str] = field(default_factory=dict)


# --- history -------------------------------------------------------------------------------------------------


def encode_cursor(entry: HistoryEntry | sa.Row[Any]) -> str:
    return cursor_of(entry.at, entry.id)


def cursor_of(at: dt.datetime, row_id: uuid.UUID) -> str:
    """A cursor of the JSON API's keyset pages (history, review items): a row's time and id."""
    raw = f"{isoformat_micro(at)}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


CURSOR_MAX_LENGTH = 120


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    if len(cursor) > CURSOR_MAX_LENGTH:
        raise BadCursor("the cursor is not one this API gave")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, _, id_text = raw.partition("|")
        at = dt.datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("naive")
        return at, uuid.UUID(id_text)
    except ValueError as exc:
        raise BadCursor("the cursor is not one this API gave") from exc


def isoformat_micro(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def history(
    session: Session, supporter_id: uuid.UUID, *, limit: int | None = None, cursor: str | None = None
) -> tuple[Supporter, list[sa.Row[Any]], str | None]:
    """One supporter's timeline, newest first (at desc, id desc), as rows with the entry's columns as attributes.
    With `limit`, also the cursor of the rest."""
    supporter = resolve_supporter(session, supporter_id)
    before = decode_cursor(cursor) if cursor else None
    rows = repository.history_page(session, supporter.id, limit=None if limit is None else limit + 1, before=before)
    next_cursor = None
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1])
    return supporter, rows, next_cursor


def history_json(
    session: Session,
    supporter_id: uuid.UUID,
    *,
    limit: int | None = None,
    cursor: str | None = None,
    render: Callable[[Any], str],
) -> tuple[Supporter, list[str], str | None]:
    """The same page as `history`, each item as JSON text: made by PostgreSQL itself there, else by `render(row)`
    (the API's `schemas.history_item` dumped). The hot path of the history endpoint."""
    supporter = resolve_supporter(session, supporter_id)
    before = decode_cursor(cursor) if cursor else None
    fetch = None if limit is None else limit + 1
    if is_postgres(session):
        rows = repository.history_page_json(session, supporter.id, limit=fetch, before=before)
    else:
        rows = repository.history_page(session, supporter.id, limit=fetch, before=before)
    next_cursor = None
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1])
    texts = [row.item for row in rows] if is_postgres(session) else [render(row) for row in rows]
    return supporter, texts, next_cursor


def add_note(uow: UnitOfWork, supporter_id: uuid.UUID, text: str, *, author: str) -> HistoryEntry:
    """A staff note: a `note` item in the timeline (it moves with a merge like every other item)."""
    text = clean_text(text)
    if not text:
        raise InvalidDonorDetails("a note needs some text", {"text": "Write the note"})
    refuse_too_long({"text": (text, MAX_STAFF_NOTE, "A note")})
    supporter = recordable_supporter(uow.session, supporter_id)
    note_id = uuid.uuid4()
    record_history(
        uow,
        supporter.id,
        type="note",
        summary=text[:500],
        data={"note_id": str(note_id), "text": text, "author": author},
        dedupe_key=f"note:{note_id}",
    )
    entry = repository.history_by_dedupe_key(uow.session, f"note:{note_id}")
    assert entry is not None
    return entry


# --- interests and consents ----------------------------------------------------------------------------------


def record_interest(uow: UnitOfWork, supporter_id: uuid.UUID, *, kind: str, source: str, note: str = "") -> Interest:
    """An interest (volunteering, events, ...) with where it came from, shown in the history."""
    kind = kind.strip().lower()
    if not INTEREST_KIND.match(kind):
        raise InvalidDonorDetails(
            f"{kind!r} is not an interest; use a short word such as volunteering", {"kind": "Choose an interest"}
        )
    note = clean_text(note)
    refuse_too_long({"note": (note, MAX_INTEREST_NOTE, "A note")})
    supporter = recordable_supporter(uow.session, supporter_id)
    interest = Interest(supporter_id=supporter.id, kind=kind, source=source[:32], note=note)
    uow.session.add(interest)
    uow.session.flush()
    record_history(
        uow,
        supporter.id,
        type="interest",
        summary=f"Interested in {kind.replace('_', ' ')} ({source})" + (f": {interest.note}" if interest.note else ""),
        at=interest.at,
        data={"interest_id": str(interest.id), "kind": kind, "source": source},
        dedupe_key=f"interest:{interest.id}",
    )
    return interest


def change_consent_by_staff(
    uow: UnitOfWork,
    supporter_id: uuid.UUID,
    *,
    channel: ConsentChannel,
    status: ConsentStatus,
    by: str,
    wording_version: str = "",
    wording_text: str | None = None,
    note: str = "",
) -> Consent:
    """A consent given or withdrawn to a member of staff (phone, letter, in person), with the words read or shown
    to them when given (`record_consent`)."""
    if status == ConsentStatus.PENDING:
        raise InvalidDonorDetails("staff record a consent as granted or withdrawn", {"status": "granted or withdrawn"})
    supporter = recordable_supporter(uow.session, supporter_id)
    words = clean_text(wording_text or "")
    return record_consent(
        uow,
        supporter.id,
        channel=channel,
        status=status,
        source="staff",
        wording_version=wording_version,
        wording_text=words or None,
        evidence={"by": by, "note": note[:500]},
    )


# --- declarations by staff -----------------------------------------------------------------------------------


def declarations(session: Session, supporter_id: uuid.UUID) -> list[Declaration]:
    return repository.declarations_of(session, resolve_supporter(session, supporter_id).id)


def declaration_status(declaration: Declaration) -> str:
    """voided (never made), cancelled, awaiting_confirmation (oral, no letter yet) or active."""
    if declaration.voided:
        return "voided"
    if declaration.cancelled_at is not None:
        return "cancelled"
    if declaration.method == DeclarationMethod.ORAL and declaration.confirmation_sent_on is None:
        return "awaiting_confirmation"
    return "active"


def get_declaration(session: Session, declaration_id: uuid.UUID) -> Declaration:
    declaration = session.get(Declaration, declaration_id)
    if declaration is None:
        raise DeclarationNotFound(f"no declaration {declaration_id}")
    return declaration


def cancel_declaration(
    uow: UnitOfWork, declaration_id: uuid.UUID, *, effective_on: dt.date, reason: str = "", by: str = ""
) -> Declaration:
    """Cancel from `effective_on` (gifts before it stay claimable). An oral declaration cancelled within 30 days
    of its written confirmation (or before one was sent, unless it was recorded) is void: treated as never made."""
    declaration = get_declaration(uow.session, declaration_id)
    if declaration.cancelled_at is not None:
        raise DeclarationAlreadyCancelled(f"declaration {declaration_id} was already cancelled")
    if effective_on < declaration.made_on:
        raise InvalidDonorDetails(
            "a cancellation cannot take effect before the declaration was made",
            {"effective_on": "On or after the day the declaration was made"},
        )
    declaration.cancelled_at = utc_now()
    declaration.cancellation_effective_on = effective_on
    # The declaration outlives an erasure while HMRC may need it, and its cancellation is a Gift Aid fact; the
    # reason, words staff type about the donor, is not kept on a record that must hold none.
    erased = resolve_supporter(uow.session, declaration.supporter_id).erased_at is not None
    declaration.cancellation_reason = "" if erased else reason.strip()[:200]
    if declaration.method == DeclarationMethod.ORAL:
        declaration.voided = _oral_void(declaration)
    uow.session.add(declaration)
    uow.session.flush()
    if not declaration.voided:
        what = "cancelled"
    elif declaration.confirmation_sent_on is not None:
        what = "voided (cancelled within 30 days of the confirmation)"
    else:
        what = "voided (cancelled before any written confirmation)"
    record_history(
        uow,
        declaration.supporter_id,
        type="declaration_cancelled",
        summary=f"Gift Aid declaration {what} from {effective_on:%d/%m/%Y}"
        + (f": {declaration.cancellation_reason}" if declaration.cancellation_reason else ""),
        data={
            "declaration_id": str(declaration.id),
            "effective_on": effective_on.isoformat(),
            "voided": declaration.voided,
            "by": by,
        },
        dedupe_key=f"declaration_cancelled:{declaration.id}",
    )
    return declaration


def _oral_void(declaration: Declaration) -> bool:
    """Whether a cancelled oral declaration is void, treated as never made."""
    assert declaration.cancelled_at is not None and declaration.cancellation_effective_on is not None
    sent = declaration.confirmation_sent_on
    if sent is None:
        # No written record: with an audio recording it has been in effect since it was made, and cancelling it is
        # not retrospective (rule 14); without one it never took effect.
        return not declaration.recorded
    # Cancelled within 30 days of its written record: treated as never made (giftaid.md §1C rule 13). What counts
    # is when the donor cancelled: the effective date when it was past (a letter dated then, recorded late), else
    # the day it was recorded (a donor who rings on day 10 to stop "from next month" has cancelled on day 10).
    cancelled_on = min(declaration.cancellation_effective_on, uk_date(declaration.cancelled_at))
    return cancelled_on <= sent + ORAL_CANCELLATION_WINDOW


def confirm_oral_declaration(
    uow: UnitOfWork, declaration_id: uuid.UUID, *, confirmation_sent_on: dt.date, by: str = ""
) -> Declaration:
    """Record the date the written confirmation of an oral declaration was sent (it takes effect then).
    The same date again changes nothing."""
    declaration = get_declaration(uow.session, declaration_id)
    if declaration.method != DeclarationMethod.ORAL:
        raise InvalidDonorDetails(
            "only an oral declaration needs a written confirmation", {"method": "Not an oral declaration"}
        )
    if confirmation_sent_on < declaration.made_on:
        raise InvalidDonorDetails(
            "the confirmation cannot be sent before the declaration was made",
            {"confirmation_sent_on": "On or after the day the declaration was made"},
        )
    if confirmation_sent_on > uk_today():
        raise InvalidDonorDetails(
            "the confirmation cannot be sent in the future", {"confirmation_sent_on": "Today or earlier"}
        )
    if declaration.voided:
        raise DeclarationAlreadyCancelled(f"declaration {declaration_id} was voided")
    if declaration.confirmation_sent_on == confirmation_sent_on:
        return declaration
    declaration.confirmation_sent_on = confirmation_sent_on
    if declaration.cancelled_at is not None:
        # Cancelled already (after its 30 days, or with a recording): the 30 days now run from this letter's date,
        # and a cancellation within them makes it never made, as if the date had been known when it was cancelled.
        declaration.voided = _oral_void(declaration)
    uow.session.add(declaration)
    uow.session.flush()
    record_history(
        uow,
        declaration.supporter_id,
        type="declaration_confirmed",
        summary=f"Written confirmation of the oral Gift Aid declaration sent {confirmation_sent_on:%d/%m/%Y}"
        + (" (it was cancelled within 30 days of it: void)" if declaration.voided else ""),
        data={
            "declaration_id": str(declaration.id),
            "confirmation_sent_on": confirmation_sent_on.isoformat(),
            "by": by,
        },
        dedupe_key=f"declaration_confirmed:{declaration.id}:{confirmation_sent_on.isoformat()}",
    )
    return declaration


# --- review items --------------------------------------------------------------------------------------------


def review_items(
    session: Session, *, open_only: bool = True, limit: int = 100, cursor: str | None = None
) -> tuple[list[ReviewItem], str | None]:
    """Newest first (created_at desc, id desc), `limit` of them after `cursor` (the one a previous page gave), and the
    cursor of the rest (None when there is none). Items raised or resolved meanwhile neither repeat nor are skipped."""
    before = decode_cursor(cursor) if cursor else None
    rows = repository.review_items(session, open_only=open_only, limit=limit + 1, before=before)
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, cursor_of(rows[-1].created_at, rows[-1].id)


def open_review_items(session: Session, *, kind: str, key_prefix: str = "") -> list[ReviewItem]:
    """Unresolved items of a kind (whose dedupe key starts with `key_prefix`), for the wing that raised them to
    resolve once their cause is gone."""
    return repository.open_review_items(session, kind=kind, key_prefix=key_prefix)


def resolve_review_item(uow: UnitOfWork, item_id: uuid.UUID, *, by: str) -> ReviewItem:
    item = uow.session.get(ReviewItem, item_id)
    if item is None:
        raise ReviewItemNotFound(f"no review item {item_id}")
    if item.resolved_at is None:
        item.resolved_at = utc_now()
        item.resolved_by = by
        uow.session.add(item)
    return item


# --- "Subscribe for updates": double opt-in ------------------------------------------------------------------

SUBSCRIBE_WORDING = "email-updates-v1"
SUBSCRIBE_CONFIRM_PURPOSE = "subscribe-confirm"
UNSUBSCRIBE_PURPOSE = "unsubscribe"
SUBSCRIBE_LINK_LIFETIME = dt.timedelta(days=3)


def start_subscription(
    uow: UnitOfWork,
    email: str,
    *,
    first_name: str = "",
    last_name: str = "",
    client: str = "",
    wording_text: str | None = None,
) -> PendingSubscription | None:
    """Record a pending email consent and send a confirmation link. Nothing is sent to someone whose consent is
    already granted (the caller answers the same, so the form does not reveal who is subscribed).
    `wording_text`: the words the page shows (`email_updates_wording`), kept with the consent; its email quotes
    them."""
    address = normalise_email(email)
    supporter = supporter_for_email(uow, address, first_name=first_name, last_name=last_name, source="subscribe")
    current = repository.current_consents(uow.session, supporter.id).get(ConsentChannel.EMAIL)
    if current is not None and current.status == ConsentStatus.GRANTED:
        return None
    consent = record_consent(
        uow,
        supporter.id,
        channel=ConsentChannel.EMAIL,
        status=ConsentStatus.PENDING,
        source="subscribe",
        wording_version=SUBSCRIBE_WORDING,
        wording_text=wording_text,
        evidence={"client": client},
    )
    now = utc_now()
    pending = PendingSubscription(
        supporter_id=supporter.id, consent_id=consent.id, created_at=now, expires_at=now + SUBSCRIBE_LINK_LIFETIME
    )
    uow.session.add(pending)
    uow.session.flush()
    uow.enqueue("crm.send_subscription_confirmation", pending_id=str(pending.id))
    return pending


def confirmation_not_wanted(session: Session, pending: PendingSubscription) -> str | None:
    """Why a subscription's confirmation email should not go now (its job asks when it runs, also on a retry), or
    None: `withdrawn` (they asked us to stop after asking for it: an unsubscribe link, staff; what they asked last
    stands, as `confirm_subscription` holds), `granted` (subscribed meanwhile, say on the donate form: nothing left
    to confirm) or `expired` (the link would arrive dead)."""
    if pending.expires_at <= utc_now():
        return "expired"
    current = repository.current_consents(session, pending.supporter_id).get(ConsentChannel.EMAIL)
    if current is not None and current.status == ConsentStatus.GRANTED:
        return "granted"
    if current is not None and current.status == ConsentStatus.WITHDRAWN and current.at >= pending.created_at:
        return "withdrawn"
    return None


def skip_confirmation(uow: UnitOfWork, pending: PendingSubscription, reason: str) -> None:
    """Record that the confirmation email was not sent, and why (`confirmation_not_wanted`)."""
    pending.skipped_at = utc_now()
    pending.skipped_reason = reason
    uow.session.add(pending)
    log.info("subscription confirmation %s not sent: %s", pending.id, reason)


def supporter_for_email(
    uow: UnitOfWork, email: str, *, first_name: str = "", last_name: str = "", source: str
) -> Supporter:
    """The supporter with this (normalised) email, or a new one. Names fill empty ones only: a different name on
    a known email raises a review item (as `find_or_create_supporter` does)."""
    first, last = clean_name(first_name), clean_name(last_name)
    refuse_too_long({"first_name": (first, MAX_NAME, "A first name"), "last_name": (last, MAX_NAME, "A last name")})
    now = utc_now()
    supporter, created = _found_or_inserted(
        uow, email, lambda: Supporter(email=email, first_name=first, last_name=last, created_at=now, updated_at=now)
    )
    if not created:
        _name_given(
            uow,
            supporter,
            first,
            last,
            detail=f"{first} {last} ({source}) used the email of",
            data={"given": {"first_name": first, "last_name": last}, "source": source},
        )
    return supporter


def subscription_words(session: Session, pending: PendingSubscription) -> str | None:
    """The words kept with a subscription's pending consent (those its page showed and its email quotes); None for
    one started before words were kept."""
    consent = session.get(Consent, pending.consent_id)
    if consent is None or consent.wording_id is None:
        return None
    return repository.wording_texts(session, [consent.wording_id]).get(consent.wording_id)


def confirm_subscription(
    uow: UnitOfWork, pending_id: uuid.UUID, *, client: str = "", wording_text: str | None = None
) -> bool:
    """Grant the email consent of a confirmed link, with the words its email quoted (those of the pending consent;
    `wording_text` for a subscription started before words were kept). Returns False when it was already
    confirmed, or the consent is already granted (no change).
    The pending row is locked: a mail scanner's prefetch and the person's click at once grant it once."""
    pending = uow.session.get(PendingSubscription, pending_id, with_for_update=True)
    if pending is None:
        raise SubscriptionNotFound("this confirmation link is not ours")
    if pending.confirmed_at is not None:
        return False
    if pending.expires_at <= utc_now():
        raise SubscriptionLinkExpired("this confirmation link has expired; subscribe again for a new one")
    pending.confirmed_at = utc_now()
    uow.session.add(pending)
    # A second link (Subscribe pressed twice) confirms what the first granted: no change (contract.md). The
    # supporter's row is locked first, so two links clicked at the same moment grant once.
    uow.session.get(Supporter, pending.supporter_id, with_for_update=True)
    current = repository.current_consents(uow.session, pending.supporter_id).get(ConsentChannel.EMAIL)
    if current is not None and current.status == ConsentStatus.GRANTED:
        return False
    if current is not None and current.status == ConsentStatus.WITHDRAWN and current.at >= pending.created_at:
        # They asked us to stop after this link was sent (its email's Stop link, a later unsubscribe, staff): what
        # they asked last stands, whoever opens the old link now (a mail scanner re-checking it). PECR.
        raise SubscriptionLinkExpired(
            "you asked us to stop emailing you after this link was sent, so it no longer subscribes you; "
            "subscribe again for a new one"
        )
    record_consent(
        uow,
        pending.supporter_id,
        channel=ConsentChannel.EMAIL,
        status=ConsentStatus.GRANTED,
        source="subscribe",
        wording_version=SUBSCRIBE_WORDING,
        wording_text=subscription_words(uow.session, pending) or wording_text,
        evidence={"pending_consent_id": str(pending.consent_id), "confirmed_from": client, "double_opt_in": True},
    )
    return True


def unsubscribe(uow: UnitOfWork, supporter_id: uuid.UUID, *, client: str = "") -> bool:
    """Withdraw email consent from an unsubscribe link. Returns False when it was not in force (no change)."""
    supporter = resolve_supporter(uow.session, supporter_id)
    current = repository.current_consents(uow.session, supporter.id).get(ConsentChannel.EMAIL)
    if current is not None and current.status == ConsentStatus.WITHDRAWN:
        return False
    record_consent(
        uow,
        supporter.id,
        channel=ConsentChannel.EMAIL,
        status=ConsentStatus.WITHDRAWN,
        source="unsubscribe_link",
        evidence={"client": client},
    )
    return True


def subscription_confirm_url(base_url: str, secret: str, pending_id: uuid.UUID) -> str:
    token = signing.sign(secret, SUBSCRIBE_CONFIRM_PURPOSE, str(pending_id))
    return f"{base_url.rstrip('/')}/subscribe/confirm?token={token}"


def pending_id_from_token(secret: str, token: str) -> uuid.UUID:
    try:
        value = signing.unsign(
            secret, SUBSCRIBE_CONFIRM_PURPOSE, token, max_age_seconds=int(SUBSCRIBE_LINK_LIFETIME.total_seconds())
        )
        return uuid.UUID(str(value))
    except signing.InvalidToken as exc:
        if exc.expired:
            raise SubscriptionLinkExpired("this confirmation link has expired; subscribe again for a new one") from exc
        raise SubscriptionNotFound("this confirmation link is not valid") from exc


def unsubscribe_url(base_url: str, secret: str, supporter_id: uuid.UUID) -> str:
    """The link every email to a supporter carries; it never expires."""
    token = signing.sign(secret, UNSUBSCRIBE_PURPOSE, str(supporter_id))
    return f"{base_url.rstrip('/')}/unsubscribe?token={token}"


def supporter_id_from_unsubscribe_token(secret: str, token: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(signing.unsign(secret, UNSUBSCRIBE_PURPOSE, token, max_age_seconds=None)))
    except signing.InvalidToken as exc:
        raise SubscriptionNotFound("this unsubscribe link is not valid") from exc


# --- merge (crm's part; giving.merge runs every wing's part in one unit of work) ----------------------------


def merge_pair(session: Session, from_id: uuid.UUID, into_id: uuid.UUID) -> tuple[Supporter, Supporter]:
    """(the record that goes, the survivor), both resolved; 400 when they are the same person already, 409 when
    either was erased (a live donor's gifts and details would land on, or come from, a record that must hold none,
    and documents stop for erased records)."""
    loser = resolve_supporter(session, from_id)
    survivor = resolve_supporter(session, into_id)
    if loser.id == survivor.id:
        raise CannotMergeIntoItself(f"{from_id} and {into_id} are the same supporter; nothing to merge")
    erased = [str(record.id) for record in (loser, survivor) if record.erased_at is not None]
    if erased:
        raise CannotMergeErased(f"supporter {', '.join(erased)} was erased: an erased record is never merged")
    return loser, survivor


def supporter_record_counts(session: Session, supporter_id: uuid.UUID) -> dict[str, int]:
    return repository.count_owned(session, supporter_id)


def reassign_supporter(uow: UnitOfWork, from_id: uuid.UUID, to_id: uuid.UUID) -> dict[str, int]:
    """Move every crm row of `from_id` (addresses, consents, interests, declarations, history and notes, review
    items, pending subscriptions) to `to_id`. The survivor's current address stays current."""
    session = uow.session
    if repository.current_address(session, to_id) is not None:
        repository.close_open_addresses(session, from_id, utc_now())
    return repository.move_owned(session, from_id, to_id)


def finish_merge(uow: UnitOfWork, loser: Supporter, survivor: Supporter, *, moved: dict[str, int], by: str) -> None:
    """Point the old record at the survivor (it keeps resolving), fill the survivor's empty details from it, and
    record the merge in both timelines. Call after every wing has moved its rows."""
    session = uow.session
    now = utc_now()
    for name in ("title", "phone"):
        if not getattr(survivor, name) and getattr(loser, name):
            setattr(survivor, name, getattr(loser, name))
    if not (survivor.first_name or survivor.last_name):
        survivor.first_name, survivor.last_name = loser.first_name, loser.last_name
    if survivor.email is None and loser.email is not None:
        # The email is unique: it leaves the old record (written first: one flush would write both rows in key
        # order, and half the time the survivor's before the old record let go of it), then finds the survivor.
        email, loser.email = loser.email, None
        session.add(loser)
        session.flush()
        survivor.email = email
        session.add(survivor)
        session.flush()
    address = repository.current_address(session, survivor.id)
    survivor.postcode = address.postcode if address is not None else survivor.postcode
    survivor.updated_at = now
    loser.merged_into_id = survivor.id
    loser.updated_at = now
    session.add(survivor)
    session.add(loser)
    session.flush()
    repository.repoint_merged(session, loser.id, survivor.id)
    moved_total = {k: v for k, v in moved.items() if v}
    data = {"merged_id": str(loser.id), "into_id": str(survivor.id), "moved": moved_total, "by": by}
    repository.insert_history_once(
        session,
        {
            "id": uuid.uuid4(),
            "supporter_id": loser.id,
            "at": now,
            "type": "merged",
            "summary": f"Merged into {_display_name(survivor)} ({survivor.id})",
            "amount": None,
            "currency": None,
            "data": data,
            "dedupe_key": f"merged:{loser.id}:from",
            "created_at": now,
        },
    )
    record_history(
        uow,
        survivor.id,
        type="merged",
        summary=f"{_display_name(loser)} ({loser.id}) merged into this record",
        at=now,
        data=data,
        dedupe_key=f"merged:{loser.id}:into",
    )


def _display_name(supporter: Supporter) -> str:
    name = " ".join(p for p in (supporter.title, supporter.first_name, supporter.last_name) if p)
    return name or supporter.email or "a supporter"
