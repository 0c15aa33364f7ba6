"""JSON shapes of the crm API: request bodies (pydantic, strict about unknown fields) and responses (dicts in the
contract's formats; `core.http.JSON` renders dates, timestamps, ids and Money)."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.clock import isoformat_z
from crm.errors import InvalidDonorDetails
from crm.models import (
    Consent,
    ConsentChannel,
    Declaration,
    DeclarationMethod,
    DeclarationScope,
    HistoryEntry,
    Interest,
    ReviewItem,
    Supporter,
    SupporterAddress,
)
from crm.service import SupporterView, declaration_status

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AddressIn(Body):
    title: str | None = None
    first_name: str
    last_name: str
    address_line1: str = ""
    address_line2: str = ""
    town: str = ""
    postcode: str = ""
    country: str = "GB"


class DeclarationIn(Body):
    method: DeclarationMethod
    made_on: dt.date
    scope: DeclarationScope
    start: dt.date | None = None
    end: dt.date | None = None
    gift_id: uuid.UUID | None = None
    confirmation_sent_on: dt.date | None = None
    # Without it, the supporter's current name and address are used.
    address: AddressIn | None = None
    wording_version: str = Field(default="", max_length=64)
    # The words of a wording version not the charity's own; needed the first time that version is given.
    wording_text: str = Field(default="", max_length=4000)
    evidence: dict[str, Any] = Field(default_factory=dict)


class CancelIn(Body):
    effective_on: dt.date
    reason: str = Field(default="", max_length=200)


class ConfirmIn(Body):
    confirmation_sent_on: dt.date


class NoteIn(Body):
    text: str = Field(min_length=1, max_length=4000)


class InterestIn(Body):
    kind: str = Field(min_length=2, max_length=32)
    note: str = Field(default="", max_length=500)
    source: str = Field(default="staff", max_length=32)


class ConsentIn(Body):
    channel: ConsentChannel
    status: Literal["granted", "withdrawn"]
    wording_version: str = Field(default="", max_length=64)
    # The words read or shown to them; without them, the words last kept under `wording_version` (if any).
    wording_text: str = Field(default="", max_length=4000)
    note: str = Field(default="", max_length=500)


class MergeIn(Body):
    into: uuid.UUID


_UNSTORABLE = re.compile("[\x00\ufffe\uffff]")


def _without_nul(value: Any) -> Any:
    """NUL characters dropped from every string (keys too): nobody types one, and PostgreSQL's text and jsonb
    cannot hold it (a statement with one fails). U+FFFE and U+FFFF too: XML cannot hold them."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("", value)
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogates(value: Any, path: str = "") -> dict[str, str]:
    """Where the body holds a lone surrogate (JSON's `\\ud800` escapes can carry one), by field path. pydantic
    refuses one in a text field, but not inside free JSON (`evidence`), and no database stores it (PostgreSQL's
    jsonb refuses the whole statement: a 500)."""
    found: dict[str, str] = {}
    if isinstance(value, str):
        if _LONE_SURROGATE.search(value):
            found[path or "body"] = "Input should be a valid string, it holds a lone surrogate"
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            found.update(_lone_surrogates(key, inner))
            found.update(_lone_surrogates(item, inner))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(_lone_surrogates(item, f"{path}.{index}" if path else str(index)))
    return found


def parse_body(model: type[M], raw: bytes) -> M:
    """The request body as `model`, or a 400 that names every wrong field."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise InvalidDonorDetails(f"the body is not JSON: {exc}") from exc
    unstorable = _lone_surrogates(data)
    if unstorable:
        raise InvalidDonorDetails("; ".join(f"{k}: {v}" for k, v in unstorable.items()), unstorable)
    try:
        return model.model_validate(_without_nul(data))
    except ValidationError as exc:
        errors = {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in exc.errors()}
        raise InvalidDonorDetails("; ".join(f"{k}: {v}" for k, v in errors.items()), errors) from exc


def address_json(address: SupporterAddress | None) -> dict[str, Any] | None:
    if address is None:
        return None
    return {
        "address_line1": address.line1,
        "address_line2": address.line2,
        "town": address.town,
        "postcode": address.postcode,
        "country": address.country,
        "valid_from": address.valid_from,
    }


def consent_json(consent: Consent, words: Mapping[uuid.UUID, str]) -> dict[str, Any]:
    """`words`: the kept wordings' texts by id (`crm.service.consent_words`); `wording_text` is null for a consent
    kept without its words (recorded before they were kept, a withdrawal)."""
    return {
        "id": consent.id,
        "channel": consent.channel,
        "status": consent.status,
        "at": consent.at,
        "source": consent.source,
        "wording_version": consent.wording_version,
        "wording_text": words.get(consent.wording_id) if consent.wording_id is not None else None,
    }


def interest_json(interest: Interest) -> dict[str, Any]:
    return {
        "id": interest.id,
        "kind": interest.kind,
        "source": interest.source,
        "note": interest.note,
        "at": interest.at,
    }


def supporter_summary(supporter: Supporter) -> dict[str, Any]:
    """The item of a list: enough to recognise someone."""
    return {
        "id": supporter.id,
        "email": supporter.email,
        "title": supporter.title,
        "first_name": supporter.first_name,
        "last_name": supporter.last_name,
        "postcode": supporter.postcode,
        "created_at": supporter.created_at,
    }


def supporter_detail(view: SupporterView, totals: dict[str, Any]) -> dict[str, Any]:
    supporter = view.supporter
    return {
        **supporter_summary(supporter),
        "phone": supporter.phone,
        "address": address_json(view.address),
        "consents": {
            channel.value: consent_json(c, view.consent_words) for channel, c in sorted(view.consents.items())
        },
        "interests": [interest_json(i) for i in view.interests],
        "statement_preference": supporter.statement_preference,
        "merged_ids": view.merged_ids,
        "updated_at": supporter.updated_at,
        "totals": totals,
    }


def history_item(entry: HistoryEntry | sa.Row[Any]) -> dict[str, Any]:
    """`{"id", "at", "type", "summary", "amount"?, ...}`: the entry's own ids (gift_id, provider_ids, ...) are
    spread into the item; they never replace the fixed keys."""
    item: dict[str, Any] = dict(entry.data or {})
    item.update({"id": str(entry.id), "at": isoformat_z(entry.at), "type": entry.type, "summary": entry.summary})
    if entry.amount is not None:
        item["amount"] = {"amount": entry.amount, "currency": entry.currency or "GBP"}
    else:
        item.pop("amount", None)
    return item


def declaration_json(declaration: Declaration, words: Mapping[uuid.UUID, str]) -> dict[str, Any]:
    """`words`: the kept wordings' texts by id (`crm.service.declaration_words`)."""
    return {
        "id": declaration.id,
        "supporter_id": declaration.supporter_id,
        "status": declaration_status(declaration),
        "method": declaration.method,
        "made_on": declaration.made_on,
        "scope": declaration.scope,
        "start": declaration.start,
        "end": declaration.end,
        "gift_id": declaration.gift_id,
        "title": declaration.title,
        "first_name": declaration.first_name,
        "last_name": declaration.last_name,
        "address_line1": declaration.address_line1,
        "address_line2": declaration.address_line2,
        "town": declaration.town,
        "house": declaration.house,
        "postcode": declaration.postcode,
        "country": declaration.country,
        "non_uk": declaration.non_uk,
        "wording_version": declaration.wording_version,
        "wording_text": words.get(declaration.wording_id) if declaration.wording_id is not None else None,
        "source": declaration.source,
        "confirmation_sent_on": declaration.confirmation_sent_on,
        "cancelled_at": declaration.cancelled_at,
        "cancellation_effective_on": declaration.cancellation_effective_on,
        "cancellation_reason": declaration.cancellation_reason,
        "voided": declaration.voided,
        "recorded_by": declaration.recorded_by,
        "created_at": declaration.created_at,
    }


def review_item_json(item: ReviewItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "supporter_id": item.supporter_id,
        "kind": item.kind,
        "detail": item.detail,
        "data": item.data,
        "created_at": item.created_at,
        "resolved_at": item.resolved_at,
        "resolved_by": item.resolved_by or None,
    }
