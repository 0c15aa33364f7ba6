"""Privacy across every package (a composition root: it reads and changes every wing's tables).

- `export_supporter`: everything held about a supporter (a subject access request) as one JSON document. It is
  generic: every table with a foreign key to `supporters` is included (so a wing's new table is never missed),
  plus the rows of tables that hang off those (order lines, document deliveries, ...), plus the gifts as
  claimed from HMRC and the donor details sent with them (`giftaid_claim_gifts` by gift, `giftaid_claim_donors` by
  declaration: no foreign keys), plus the words their consents and declarations were given with (`wordings`), plus
  stored webhook bodies that carry one of
  the supporter's emails (in any case; not one merely inside a longer address, which is someone else's).
- `erase_supporter`: pseudonymises what HMRC does not need now, and keeps what it does — the donor details as
  claimed on each Gift Aid claim (`giftaid_claim_donors`) and the declarations those claims relied on — until six
  years after the end of the financial period of the last claimed gift (`supporters.purge_after`). With nothing
  claimed, everything goes at once. Email addresses also go from failed deliveries', jobs' and webhook events' error
  texts and from audit log details, and their emails from the outbox directory when mail is written there
  (`[email] outbox_dir`). Their stored receipt PDFs are deleted after the commit and by a durable job written with
  the erasure (a crash in between).
- `purge_due`: the periodic job's work: blanks what was kept once `purge_after` has passed, the donor in the messages
  their claims were sent to HMRC with too (or moves it on, when a gift was claimed after the erasure with the
  declaration kept).
- `prune_webhook_bodies`: raw provider bodies are kept only `[web] keep_webhook_bodies_days`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import mailer, signing
from core.clock import add_years, isoformat_z, uk_today, utc_now
from core.db import UnitOfWork
from core.models import AuditEntry, Job
from core.settings import Settings
from crm import service as crm_service
from crm.models import (
    Consent,
    Declaration,
    HistoryEntry,
    Interest,
    PendingSubscription,
    ReviewItem,
    Supporter,
    SupporterAddress,
    Wording,
)
from giftaid import service as giftaid_service
from giftaid.eligibility import period_end
from giftaid.models import ClaimDonor, ClaimGift, Message
from giftaid.sendable import sendable
from giftaid.xml import text as xml_text
from giving.merge import lock_resolved
from giving.registry import metadata
from payments import checkout as checkout_service
from payments import service as payments_service
from payments.models import Checkout, Gift, RegularGift
from receipts import service as receipts_service
from receipts.models import Delivery, DeliveryStatus, Document, DocumentStatus
from webhooks.models import EventStatus, InboundEvent

EXPORT_FORMAT = "giving-subject-access-v1"
# A charity keeps Gift Aid records six years after the end of the accounting period they relate to (giftaid.md §5):
# what HMRC needs is kept that long after the end of the financial period of the last claimed gift.
KEEP_FOR_HMRC_YEARS = 6
ERASED_NAME = ("Erased", "supporter")
ERASURE_REQUEST = payments_service.ERASURE_REQUEST
# The job deleting an erased supporter's emails from the outbox directory (giving/privacy_tasks.py).
OUTBOX_JOB = "privacy.delete_outbox_mail"
# The job deleting an erased supporter's stored receipt and letter PDFs (by storage key).
FILES_JOB = "privacy.delete_receipt_files"


# --- subject access export -----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return isoformat_z(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return None
    return value


def _raw_rows(session: Session, table: sa.Table, condition: sa.ColumnElement[bool]) -> list[dict[str, Any]]:
    order = list(table.primary_key.columns)
    return [dict(row._mapping) for row in session.execute(sa.select(table).where(condition).order_by(*order))]


def _plain_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in rows]


def supporter_ids(session: Session, supporter_id: uuid.UUID) -> list[uuid.UUID]:
    """The record and every record merged into it (their rows belong to the same person)."""
    survivor = crm_service.resolve_supporter(session, supporter_id)
    ids = [survivor.id]
    frontier = [survivor.id]
    while frontier:
        merged = list(session.exec(select(Supporter.id).where(col(Supporter.merged_into_id).in_(frontier))).all())
        new = [m for m in merged if m not in ids]
        ids.extend(new)
        frontier = new
    return ids


def export_supporter(session: Session, supporter_id: uuid.UUID) -> dict[str, Any]:
    """Every row held about the supporter, table by table (tables in dependency order, rows by primary key)."""
    ids = supporter_ids(session, supporter_id)
    supporters: sa.Table = Supporter.__table__  # type: ignore[attr-defined]
    tables = {"supporters": _plain_rows(_raw_rows(session, supporters, supporters.c.id.in_(ids)))}
    # Primary keys of the exported rows per table, for the tables that hang off them.
    exported_keys: dict[str, list[Any]] = {"supporters": list(ids)}
    for table in metadata.sorted_tables:
        if table.name == "supporters":
            continue
        conditions = []
        for fk in table.foreign_keys:
            parent = fk.column.table.name
            if parent in exported_keys and exported_keys[parent] and fk.column.primary_key:
                conditions.append(fk.parent.in_(exported_keys[parent]))
        if not conditions:
            continue
        rows = _raw_rows(session, table, sa.or_(*conditions))
        if not rows:
            continue
        tables[table.name] = _plain_rows(rows)
        pk = list(table.primary_key.columns)
        if len(pk) == 1:
            exported_keys[table.name] = [r[pk[0].name] for r in rows]
    # The gifts as claimed from HMRC and the donor details each claim sent with them (no foreign keys: claim rows
    # outlive nothing).
    for table, column, keys in (
        (ClaimGift.__table__, "gift_id", exported_keys.get("gifts")),  # type: ignore[attr-defined]
        (ClaimDonor.__table__, "declaration_id", exported_keys.get("declarations")),  # type: ignore[attr-defined]
    ):
        claimed = _raw_rows(session, table, table.c[column].in_(keys)) if keys else []
        if claimed:
            tables[table.name] = _plain_rows(claimed)
    # The words they agreed to: the wordings their consents and declarations point at (shared rows, so no table
    # hangs them off the supporter).
    wording_ids = {r["wording_id"] for name in ("consents", "declarations") for r in tables.get(name, [])}
    wording_ids.discard(None)
    if wording_ids:
        wordings: sa.Table = Wording.__table__  # type: ignore[attr-defined]
        tables["wordings"] = _plain_rows(
            _raw_rows(session, wordings, wordings.c.id.in_([uuid.UUID(str(i)) for i in wording_ids]))
        )
    emails = [r["email"] for r in tables["supporters"] if r.get("email")]
    event_ids = _events_naming(session, emails)
    if event_ids:
        events: sa.Table = InboundEvent.__table__  # type: ignore[attr-defined]
        tables["inbound_events"] = _plain_rows(_raw_rows(session, events, events.c.id.in_(event_ids)))
    return {
        "format": EXPORT_FORMAT,
        "supporter_id": str(ids[0]),
        "merged_ids": [str(i) for i in ids[1:]],
        "exported_at": isoformat_z(utc_now()),
        "tables": tables,
    }


# --- erasure ------------------------------------------------------------------------------------------------


@dataclass
class ErasureResult:
    supporter_id: uuid.UUID
    kept_for_hmrc: bool
    purge_after: dt.date | None
    changed: dict[str, int] = field(default_factory=dict)


def _count(changed: dict[str, int], name: str, result: Any) -> None:
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        changed[name] = changed.get(name, 0) + count


def claimed_gifts(session: Session, ids: list[uuid.UUID]) -> list[ClaimGift]:
    """The supporter's gifts as claimed from HMRC (every claim row, live or released, is evidence)."""
    return list(
        session.exec(
            select(ClaimGift)
            .join(Gift, Gift.id == ClaimGift.gift_id)  # type: ignore[arg-type]
            .where(col(Gift.supporter_id).in_(ids))
        ).all()
    )


def _scrub_addresses(session: Session, table: sa.Table, emails: list[str]) -> int:
    """Remove these email addresses from a table's `last_error` texts; returns how many rows changed."""
    total = 0
    for email in emails:
        result = session.execute(
            sa.update(table)
            .where(table.c.last_error.contains(email, autoescape=True))
            .values(last_error=sa.func.replace(table.c.last_error, email, "[erased]"))
        )
        total += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return total


def hmrc_purge_after(settings: Settings, claimed: list[ClaimGift]) -> dt.date | None:
    """Until when what HMRC needs is kept: six years after the end of the financial period of the last claimed
    gift (None when nothing was claimed)."""
    last_claimed = max((c.received_on for c in claimed), default=None)
    if last_claimed is None:
        return None
    return add_years(period_end(last_claimed, settings.charity.financial_year_end), KEEP_FOR_HMRC_YEARS)


def erase_supporter(uow: UnitOfWork, settings: Settings, supporter_id: uuid.UUID) -> ErasureResult:
    """Pseudonymise the supporter everywhere, keeping only what HMRC needs until `purge_after`. The stored PDFs
    of their receipts and letters are deleted once the change is committed (and by a durable job, `FILES_JOB`).
    Erasing again blanks anything new and keeps the first `erased_at`."""
    session = uow.session
    # A claim being built reads declarations and writes the donor details it claims with: wait for it, so what it
    # claimed is seen (and kept) here, and a build after this one sees the details blanked.
    giftaid_service.wait_for_claim_builds(session)
    # A merge into (or from) this record at the same moment waits, or is waited for and its rows are erased too.
    lock_resolved(session, supporter_id)
    ids = supporter_ids(session, supporter_id)
    survivor = session.get(Supporter, ids[0])
    assert survivor is not None
    claimed = claimed_gifts(session, ids)
    purge_after = hmrc_purge_after(settings, claimed)
    kept_declarations = {c.declaration_id for c in claimed if c.declaration_id is not None}
    kept_gifts = {c.gift_id for c in claimed}
    emails = supporter_emails(session, ids)
    changed: dict[str, int] = {}

    now = utc_now()
    first_erasure = survivor.erased_at is None
    _count(
        changed,
        "supporters",
        session.execute(
            sa.update(Supporter)
            .where(col(Supporter.id).in_(ids))
            .values(
                email=None,
                title=None,
                first_name=ERASED_NAME[0],
                last_name=ERASED_NAME[1],
                phone=None,
                postcode=None,
                erased_at=sa.func.coalesce(col(Supporter.erased_at), now),
                purge_after=purge_after,
                updated_at=now if first_erasure else col(Supporter.updated_at),
            )
        ),
    )
    _count(
        changed,
        "supporter_addresses",
        session.execute(
            sa.update(SupporterAddress)
            .where(col(SupporterAddress.supporter_id).in_(ids))
            .values(line1="", line2="", town="", postcode="")
        ),
    )
    # Consents stay as a record of what was agreed or withdrawn (no more contact); their evidence goes.
    _count(
        changed,
        "consents",
        session.execute(sa.update(Consent).where(col(Consent.supporter_id).in_(ids)).values(evidence={})),
    )
    _count(changed, "interests", session.execute(sa.delete(Interest).where(col(Interest.supporter_id).in_(ids))))
    _count(changed, "review_items", session.execute(sa.delete(ReviewItem).where(col(ReviewItem.supporter_id).in_(ids))))
    _count(
        changed,
        "pending_subscriptions",
        session.execute(sa.delete(PendingSubscription).where(col(PendingSubscription.supporter_id).in_(ids))),
    )
    # Nobody may start giving again under a record we can no longer name: the checkouts they have not finished are
    # closed (their provider pages expired by a job after the commit; a completion that still arrives records the
    # money without their details and stops any regular gift it started). Checkouts are locked before regular gifts.
    closed = checkout_service.close_checkouts(uow, ids)
    if closed:
        changed["checkouts_closed"] = closed
    # Nobody may keep taking money from a person we can no longer name: their regular gifts are cancelled at the
    # provider (recorded here, told by a job after the commit), before the history's words are blanked below.
    # Shirts paid for and not posted yet have no address to go to now: held, and staff asked to refund them.
    held = payments_service.hold_unposted_orders(uow, ids)
    if held:
        changed["orders_held"] = held
    for regular in payments_service.open_regular_gifts(session, ids):
        payments_service.request_cancellation(uow, regular.id, requested_by=ERASURE_REQUEST)
        changed["regular_gifts_cancelled"] = changed.get("regular_gifts_cancelled", 0) + 1
    # And every Direct Debit mandate we know of theirs (a one-off gift's, an ended gift's), then their customer
    # records at Stripe and GoCardless: a durable job written here, run after the regular gifts' cancellations.
    payments_service.ask_providers_to_forget(uow, ids)
    for entry in session.exec(select(HistoryEntry).where(col(HistoryEntry.supporter_id).in_(ids))).all():
        entry.summary, entry.data = crm_service.erased_history_item(entry.type, entry.data)
        session.add(entry)
        changed["history"] = changed.get("history", 0) + 1
    _count(changed, "declarations", _blank_declarations(session, ids, keep=kept_declarations))
    _count(changed, "gifts", _blank_gift_donors(session, ids, keep=kept_gifts))
    for model, name in ((RegularGift, "regular_gifts"), (Checkout, "checkouts")):
        _count(
            changed,
            name,
            session.execute(sa.update(model).where(col(model.supporter_id).in_(ids)).values(donor={})),  # type: ignore[attr-defined]
        )
    # Receipts say who they were for: their words and files go (numbers, amounts and dates stay in the ledger). A
    # document still to be issued may have its PDF stored already (its job renders and stores it before recording
    # it, and will find it withdrawn below): the file it is stored under goes too.
    # Deleted right after the commit, and again by a durable job written here: a crash between the commit and the
    # deletion would otherwise leave them for ever. The job names them by storage key ("<kind>/<number>.pdf": no
    # name or address in the jobs table).
    keys = sorted(
        {
            d.storage_key or receipts_service.storage_key(d)
            for d in session.exec(select(Document).where(col(Document.supporter_id).in_(ids))).all()
        }
    )
    if keys:
        uow.enqueue(FILES_JOB, storage_keys=keys)

        def delete_now() -> None:
            delete_receipt_files(settings, keys)

        uow.on_commit(delete_now)
    # What was still to render or to send never will be (erased supporters get nothing): withdrawn, so the postal
    # batch, the annual run's progress and the email jobs do not wait for it.
    session.execute(
        sa.update(Document)
        .where(col(Document.supporter_id).in_(ids), col(Document.status) == DocumentStatus.ALLOCATED)
        .values(status=DocumentStatus.WITHDRAWN)
    )
    session.execute(
        sa.update(Delivery)
        .where(col(Delivery.supporter_id).in_(ids), col(Delivery.status) == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.WITHDRAWN)
    )
    _count(
        changed,
        "documents",
        session.execute(sa.update(Document).where(col(Document.supporter_id).in_(ids)).values(content={})),
    )
    # Postal batches printed with their letters keep every page in one PDF: each is made again without them.
    batches = receipts_service.postal_batches_of(session, ids)
    for batch_id in batches:
        uow.enqueue(receipts_service.REBUILD_POSTAL_BATCH, batch_id=str(batch_id))
    if batches:
        changed["postal_batches"] = len(batches)
    # An SMTP error names the address it could not send to ("could not send to ada@..."), in the delivery and in
    # its job, and a database error the row it tripped on ("Key (email)=(ada@...) already exists"), in a job or a
    # webhook event that failed: every address the supporter was written to goes from those texts.
    sent_to = session.exec(
        select(Delivery.to_email).where(col(Delivery.supporter_id).in_(ids), col(Delivery.to_email).is_not(None))
    ).all()
    addresses = sorted({*emails, *(str(address) for address in sent_to)})
    tables: tuple[tuple[str, sa.Table], ...] = (
        ("delivery_errors", Delivery.__table__),  # type: ignore[attr-defined]
        ("job_errors", Job.__table__),  # type: ignore[attr-defined]
        ("event_errors", InboundEvent.__table__),  # type: ignore[attr-defined]
    )
    for name, table in tables:
        scrubbed = _scrub_addresses(session, table, addresses)
        if scrubbed:
            changed[name] = scrubbed
    # Staff searching by their email (`GET /api/supporters?email=`, as typed) or resending to an address wrote it
    # into the audit log: the entries stay (who did what, when, to which record), the addresses go.
    _count(changed, "audit_log", _scrub_audit_details(session, addresses))
    _count(
        changed,
        "document_deliveries",
        session.execute(sa.update(Delivery).where(col(Delivery.supporter_id).in_(ids)).values(to_email=None)),
    )
    # Where emails are written to an outbox directory instead of sent (the demo, a laptop: `[email] outbox_dir`),
    # each is a `.eml` file with their name, address and receipts: those go too, by a durable job written here (a
    # crash after the commit loses nothing; the sweep sends it again). It names the addresses only by a keyed
    # digest, so the jobs table keeps no address of the person erased.
    if settings.email.outbox_dir and addresses:
        secret = signing.signing_secret(session, settings.web.secret_key.get_secret_value())
        uow.enqueue(OUTBOX_JOB, digests=[outbox_digest(secret, address) for address in addresses])
    _count(changed, "inbound_events", _drop_event_bodies(session, emails))
    if purge_after is None:
        _count(changed, "giftaid_claim_donors", _blank_claim_donors(session, ids))
    session.flush()
    return ErasureResult(ids[0], purge_after is not None, purge_after, changed)


def outbox_digest(secret: str, address: str) -> str:
    """An email address as the outbox job names it: an HMAC-SHA256 keyed with the app's signing secret."""
    return hmac.new(secret.encode(), address.strip().lower().encode(), hashlib.sha256).hexdigest()


def delete_outbox_mail(session: Session, settings: Settings, digests: list[str]) -> int:
    """The outbox job's work: delete every message in `[email] outbox_dir` addressed to one of these addresses
    (`outbox_digest`); returns how many."""
    secret = signing.signing_secret(session, settings.web.secret_key.get_secret_value())
    wanted = set(digests)
    return mailer.delete_from_outbox(
        settings.email.outbox_dir, lambda address: outbox_digest(secret, address) in wanted
    )


def delete_receipt_files(settings: Settings, storage_keys: list[str]) -> int:
    """Delete these stored PDFs (the erasure's, and its job's work); a file already gone is fine. Returns how many
    were deleted."""
    store = receipts_service.store_for(settings)
    deleted = 0
    for key in storage_keys:
        path = store.path(key)
        if path.exists():
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted


def supporter_emails(session: Session, ids: list[uuid.UUID]) -> list[str]:
    """Emails the supporter's webhook bodies and error texts may carry (read before they are blanked): every
    record's (a record merged into the survivor keeps its own when the survivor had one) and those given with their
    checkouts, gifts and regular gifts."""
    emails = {e for e in session.exec(select(Supporter.email).where(col(Supporter.id).in_(ids))).all() if e}
    for model in (Checkout, Gift, RegularGift):
        donors = session.exec(select(model.donor).where(col(model.supporter_id).in_(ids))).all()  # type: ignore[attr-defined]
        emails.update(str(d["email"]) for d in donors if isinstance(d, dict) and d.get("email"))
    return sorted(emails)


# What may not touch an address on either side: a match inside a longer address (`jada@` for `ada@`, a domain that
# goes on) is someone else's.
_NOT_AFTER_ADDRESS_START = r"(?<![A-Za-z0-9._%+\-])"
_NOT_BEFORE_ADDRESS_END = r"(?![A-Za-z0-9_%+\-]|\.[A-Za-z0-9])"


def _address_pattern(wanted: list[str]) -> re.Pattern[str]:
    """These addresses in a text, whatever their case, and not merely inside a longer address."""
    return re.compile(
        f"{_NOT_AFTER_ADDRESS_START}(?:{'|'.join(re.escape(e) for e in wanted)}){_NOT_BEFORE_ADDRESS_END}",
        re.IGNORECASE,
    )


def _without_addresses(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub("[erased]", value)
    if isinstance(value, dict):
        return {key: _without_addresses(item, pattern) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_addresses(item, pattern) for item in value]
    return value


def _scrub_audit_details(session: Session, addresses: list[str]) -> int:
    """Replace these addresses (any case, as staff typed them) in the audit log's details; returns how many
    entries changed."""
    wanted = sorted({address.lower() for address in addresses if address})
    if not wanted:
        return 0
    audit: sa.Table = AuditEntry.__table__  # type: ignore[attr-defined]
    text = sa.func.lower(sa.cast(audit.c.detail, sa.Text))
    pattern = _address_pattern(wanted)
    changed = 0
    rows = session.execute(
        sa.select(audit.c.id, audit.c.detail).where(
            sa.or_(*(text.contains(email, autoescape=True) for email in wanted))
        )
    ).all()
    for row in rows:
        detail = _without_addresses(row.detail, pattern)
        if detail != row.detail:
            session.execute(sa.update(audit).where(audit.c.id == row.id).values(detail=detail))
            changed += 1
    return changed


def _events_naming(session: Session, emails: list[str]) -> list[uuid.UUID]:
    """Stored provider events whose body carries one of these addresses (whatever the case it was typed in, and
    not merely inside a longer address such as `jada@...` for `ada@...`)."""
    wanted = sorted({email.lower() for email in emails if email})
    if not wanted:
        return []
    events: sa.Table = InboundEvent.__table__  # type: ignore[attr-defined]
    body = sa.func.lower(events.c.body)
    mentions = sa.or_(*(body.contains(email, autoescape=True) for email in wanted))
    pattern = _address_pattern(wanted)
    rows = session.execute(
        sa.select(events.c.id, events.c.body).where(events.c.body.is_not(None), mentions).order_by(events.c.id)
    )
    return [row.id for row in rows if pattern.search(row.body)]


def _drop_event_bodies(session: Session, emails: list[str]) -> Any:
    event_ids = _events_naming(session, emails)
    if not event_ids:
        return None
    events: sa.Table = InboundEvent.__table__  # type: ignore[attr-defined]
    return session.execute(sa.update(events).where(events.c.id.in_(event_ids)).values(body=None))


def _blank_declarations(session: Session, ids: list[uuid.UUID], *, keep: set[uuid.UUID]) -> Any:
    query = sa.update(Declaration).where(col(Declaration.supporter_id).in_(ids))
    if keep:
        query = query.where(col(Declaration.id).not_in(keep))
    return session.execute(
        query.values(
            title=None,
            first_name=ERASED_NAME[0],
            last_name=ERASED_NAME[1],
            address_line1="",
            address_line2="",
            town="",
            house="",
            postcode="",
            evidence={},
            cancellation_reason="",  # free words about the donor, typed by staff
        )
    )


def _blank_gift_donors(session: Session, ids: list[uuid.UUID], *, keep: set[uuid.UUID]) -> Any:
    query = sa.update(Gift).where(col(Gift.supporter_id).in_(ids))
    if keep:
        query = query.where(col(Gift.id).not_in(keep))
    return session.execute(query.values(donor={}))


def _blank_claim_donors(session: Session, ids: list[uuid.UUID]) -> Any:
    declaration_ids = select(Declaration.id).where(col(Declaration.supporter_id).in_(ids))
    _blank_sent_donors(session, declaration_ids)
    return session.execute(
        sa.update(ClaimDonor)
        .where(col(ClaimDonor.declaration_id).in_(declaration_ids))
        .values(title=None, first_name=ERASED_NAME[0], last_name=ERASED_NAME[1], house="", postcode="")
    )


ERASED_DONOR_XML = "<Donor>[erased]</Donor>"


def _blank_sent_donors(session: Session, declaration_ids: Any) -> int:
    """The donor in the messages their claims were sent to HMRC with (`giftaid_messages`, kept with each claim):
    each `<Donor>` with their name, house and postcode as the claim's donor row keeps them (read here, before those
    are blanked) becomes `ERASED_DONOR_XML`; other donors on the claim keep theirs. Returns how many messages
    changed."""
    patterns: dict[uuid.UUID, list[re.Pattern[str]]] = {}
    for donor in session.exec(select(ClaimDonor).where(col(ClaimDonor.declaration_id).in_(declaration_ids))).all():
        fore, sur, house, postcode = (
            re.escape(xml_text(sendable(value)))
            for value in (donor.first_name, donor.last_name, donor.house, donor.postcode)
        )
        where = "<Overseas>yes</Overseas>" if donor.overseas else f"<Postcode>{postcode}</Postcode>"
        patterns.setdefault(donor.claim_id, []).append(
            re.compile(
                f"<Donor>(?:<Ttl>[^<]*</Ttl>)?<Fore>{fore}</Fore><Sur>{sur}</Sur><House>{house}</House>{where}</Donor>"
            )
        )
    changed = 0
    if patterns:
        for message in session.exec(select(Message).where(col(Message.claim_id).in_(list(patterns)))).all():
            assert message.claim_id is not None
            body = message.body
            for pattern in patterns[message.claim_id]:
                body = pattern.sub(ERASED_DONOR_XML, body)
            if body != message.body:
                message.body = body
                session.add(message)
                changed += 1
    return changed


def purge_due(uow: UnitOfWork, settings: Settings, *, today: dt.date | None = None) -> int:
    """Blank what was kept for HMRC once its time is over (erased supporters whose `purge_after` has passed). A
    gift claimed after the erasure (its declaration was kept) moves `purge_after` on to its own date instead."""
    session = uow.session
    today = today or uk_today()
    giftaid_service.wait_for_claim_builds(session)
    due = list(
        session.exec(
            select(Supporter).where(
                col(Supporter.erased_at).is_not(None),
                col(Supporter.purge_after).is_not(None),
                col(Supporter.purge_after) <= today,
            )
        ).all()
    )
    purged = 0
    for supporter in due:
        ids = [supporter.id]
        keep_until = hmrc_purge_after(settings, claimed_gifts(session, ids))
        if keep_until is not None and keep_until > today:
            supporter.purge_after = keep_until
        else:
            _blank_declarations(session, ids, keep=set())
            _blank_gift_donors(session, ids, keep=set())
            _blank_claim_donors(session, ids)
            supporter.purge_after = None
            purged += 1
        session.add(supporter)
    session.flush()
    return purged


def prune_webhook_bodies(uow: UnitOfWork, *, keep_days: int, now: dt.datetime | None = None) -> int:
    """Drop the raw bodies of provider events received more than `keep_days` ago (the event rows stay). Only of
    events done with (processed or ignored): a body still to be processed (waiting, failed, pending) is all there is
    to record its gift from, and catch-up will not fetch an event it already holds."""
    cutoff = (now or utc_now()) - dt.timedelta(days=keep_days)
    result = uow.session.execute(
        sa.update(InboundEvent)
        .where(
            col(InboundEvent.received_at) < cutoff,
            col(InboundEvent.body).is_not(None),
            col(InboundEvent.status).in_([EventStatus.PROCESSED, EventStatus.IGNORED]),
        )
        .values(body=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)
