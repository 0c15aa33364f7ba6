"""Use cases of crm. Never commits: the caller's unit of work does.

Other packages write to a supporter's timeline only through `record_history`, and find supporters through
`find_or_create_supporter` / `resolve_supporter`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlmodel import Session

from core.clock import utc_now
from core.db import UnitOfWork
from crm import repository
from crm.errors import InvalidDonorDetails, SupporterNotFound
from crm.models import (
    Consent,
    ConsentChannel,
    ConsentStatus,
    Declaration,
    DeclarationMethod,
    DeclarationScope,
    ReviewItem,
    Supporter,
    SupporterAddress,
)
from crm.validation import DonorDetails, house_from_line1, is_non_uk


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


def find_or_create_supporter(uow: UnitOfWork, details: DonorDetails, *, source: str) -> Supporter:
    """Find by normalised email, or create. Donors without email always get a new record (staff can merge).

    A different name arriving on a known email (couples often share one) raises a review item instead of
    overwriting the record. A new address becomes the current one; the old one keeps its history.
    """
    session = uow.session
    supporter = repository.supporter_by_email(session, details.email) if details.email else None
    now = utc_now()
    if supporter is None:
        supporter = Supporter(
            email=details.email,
            title=details.title,
            first_name=details.first_name,
            last_name=details.last_name,
            postcode=details.postcode or None,
            created_at=now,
            updated_at=now,
        )
        session.add(supporter)
        session.flush()
    else:
        supporter = resolve_supporter(session, supporter.id)
        if (details.first_name.casefold(), details.last_name.casefold()) != (
            supporter.first_name.casefold(),
            supporter.last_name.casefold(),
        ):
            raise_review_item(
                uow,
                supporter.id,
                kind="name_mismatch",
                detail=(
                    f"{details.first_name} {details.last_name} gave with the email of "
                    f"{supporter.first_name} {supporter.last_name}"
                ),
                data={"given": details.as_dict(), "source": source},
            )
            return supporter
    if details.address_line1 or details.postcode:
        update_address(uow, supporter, details, source=source)
    return supporter


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
    event again changes nothing. Returns whether an item was written."""
    return repository.insert_history_once(
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
        },
    )


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
    if dedupe_key is not None:
        from sqlmodel import select

        if session.exec(select(ReviewItem).where(ReviewItem.dedupe_key == dedupe_key)).first() is not None:
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
    evidence: dict[str, Any] | None = None,
) -> Consent:
    """A change of consent with its provenance, shown as one `consent` item in the history."""
    consent = Consent(
        supporter_id=supporter_id,
        channel=channel,
        status=status,
        source=source,
        wording_version=wording_version,
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
    start: dt.date | None = None,
    end: dt.date | None = None,
    gift_id: uuid.UUID | None = None,
    confirmation_sent_on: dt.date | None = None,
    evidence: dict[str, Any] | None = None,
    recorded_by: str = "",
) -> Declaration:
    """A Gift Aid declaration with the name and address given with it, checked now so a claim never finds bad
    data. `donor` must already be normalised (`DonorDetails.normalised(require_address=True)`)."""
    errors: dict[str, str] = {}
    if not donor.address_line1:
        errors["address_line1"] = "A Gift Aid declaration needs the house name or number"
    if not is_non_uk(donor.country) and not donor.postcode:
        errors["postcode"] = "A Gift Aid declaration needs a UK postcode"
    if scope == DeclarationScope.PERIOD and (start is None or end is None or end < start):
        errors["scope"] = "A declaration for a period needs a start and an end on or after it"
    if scope == DeclarationScope.THIS_GIFT and gift_id is None:
        errors["gift_id"] = "A declaration for one gift names the gift"
    if made_on > utc_now().date() + dt.timedelta(days=1):
        errors["made_on"] = "A declaration cannot be made in the future"
    if confirmation_sent_on is not None and confirmation_sent_on < made_on:
        errors["confirmation_sent_on"] = "The confirmation cannot be sent before the declaration was made"
    if errors:
        raise InvalidDonorDetails("; ".join(f"{k}: {v}" for k, v in errors.items()), errors)
    if scope == DeclarationScope.PAST_4_YEARS_AND_FUTURE and start is None:
        start = (
            made_on.replace(year=made_on.year - 4)
            if not (made_on.month == 2 and made_on.day == 29)
            else made_on.replace(year=made_on.year - 4, day=28)
        )
    declaration = Declaration(
        supporter_id=supporter_id,
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
        house=house_from_line1(donor.address_line1) if not is_non_uk(donor.country) else donor.address_line1[:40],
        postcode=donor.postcode,
        country=donor.country,
        non_uk=is_non_uk(donor.country),
        wording_version=wording_version,
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
    return declaration
