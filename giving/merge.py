"""Merging two supporter records: a composition root, because a merge touches every wing and crm imports none.

Each wing offers `reassign_supporter(uow, from_id, to_id) -> dict[str, int]` in its service (rows moved per
table). `merge_supporters` calls every one in ONE unit of work, then crm's own (last, so anything a wing wrote to
the old timeline moves too), then sweeps any table that still points at the old record (a wing that has no
`reassign_supporter` yet, or a table it forgot), so nothing is left behind. Finally crm points the old id at the
survivor (it keeps resolving: late webhooks may name it) and records the merge in both timelines.

The preview runs exactly the same code in a transaction that is rolled back, so it lists what would move.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.auth import Principal, audit
from core.db import UnitOfWork
from core.http import JSON
from core.models import StaffRole
from crm import schemas
from crm import service as crm_service
from crm.models import Supporter
from crm.routes import parse_id, staff_call
from giving.registry import metadata

log = logging.getLogger("giving.merge")

# The wings whose rows belong to a supporter, in the order their re-assignment runs (crm runs after them).
WING_SERVICES = ("payments.service", "receipts.service", "giftaid.service")
# Merging is data-quality work on supporter records: fundraisers (and admin). Finance reads, but does not merge.
MERGERS = (StaffRole.FUNDRAISER,)


@dataclass
class MergeResult:
    merged_id: uuid.UUID
    into_id: uuid.UUID
    moved: dict[str, int] = field(default_factory=dict)
    # Wings without `reassign_supporter` (their rows were moved by the generic sweep instead).
    missing: list[str] = field(default_factory=list)
    swept: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "merged_id": str(self.merged_id),
            "into_id": str(self.into_id),
            "moved": {k: v for k, v in sorted(self.moved.items()) if v},
        }


def wing_reassigners() -> tuple[list[tuple[str, Callable[..., Any]]], list[str]]:
    found, missing = [], []
    for name in WING_SERVICES:
        module = importlib.import_module(name)
        reassign = getattr(module, "reassign_supporter", None)
        if callable(reassign):
            found.append((name, reassign))
        else:
            missing.append(name)
    return found, missing


def lock_resolved(session: Session, *supporter_ids: uuid.UUID) -> None:
    """Lock the rows of these records and of those they resolve to (in id order: two callers never deadlock),
    re-reading them, so a merge or an erasure of them that committed meanwhile is seen, and none starts until this
    transaction ends. Again when a merge that committed meanwhile made one resolve elsewhere. (SQLite's BEGIN
    IMMEDIATE already serialises writers.)"""
    locked: set[uuid.UUID] = set()
    while True:
        wanted = set(supporter_ids) | {crm_service.resolve_supporter(session, i).id for i in supporter_ids}
        if wanted <= locked:
            return
        locked |= wanted
        session.exec(
            select(Supporter)
            .where(col(Supporter.id).in_(sorted(locked)))
            .order_by(col(Supporter.id))
            .with_for_update()
            .execution_options(populate_existing=True)
        ).all()


def merge_supporters(uow: UnitOfWork, from_id: uuid.UUID, into_id: uuid.UUID, *, by: str) -> MergeResult:
    """Move everything of `from_id` to `into_id` (400 when they are already one record, 409 when either was
    erased). Both records are locked first: a merge or erasure of either at the same moment goes before or after."""
    lock_resolved(uow.session, from_id, into_id)
    loser, survivor = crm_service.merge_pair(uow.session, from_id, into_id)
    result = MergeResult(merged_id=loser.id, into_id=survivor.id)
    reassigners, result.missing = wing_reassigners()
    for _name, reassign in reassigners:
        _add(result.moved, reassign(uow, loser.id, survivor.id) or {})
    _add(result.moved, crm_service.reassign_supporter(uow, loser.id, survivor.id))
    result.swept = _sweep_leftovers(uow, loser.id, survivor.id)
    _add(result.moved, result.swept)
    if result.swept:
        log.warning("merge moved rows no wing re-assigned: %s", result.swept)
    crm_service.finish_merge(uow, loser, survivor, moved=result.moved, by=by)
    return result


def preview_merge(uow: UnitOfWork, from_id: uuid.UUID, into_id: uuid.UUID) -> MergeResult:
    """What a merge would move, by doing it inside a savepoint that is then rolled back."""
    savepoint = uow.session.begin_nested()
    try:
        # Jobs a wing asks for during the rehearsal are dropped with it.
        return merge_supporters(UnitOfWork(session=uow.session, send=lambda jobs: None), from_id, into_id, by="")
    finally:
        savepoint.rollback()


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + int(value)


def _sweep_leftovers(uow: UnitOfWork, from_id: uuid.UUID, to_id: uuid.UUID) -> dict[str, int]:
    """Re-point any remaining foreign key to the old supporter (never `supporters.merged_into_id`)."""
    swept: dict[str, int] = {}
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name != "supporters" or table.name == "supporters":
                continue
            column = fk.parent
            result = uow.session.execute(sa.update(table).where(column == from_id).values({column.name: to_id}))
            if result.rowcount:  # type: ignore[attr-defined]
                swept[table.name] = swept.get(table.name, 0) + int(result.rowcount)  # type: ignore[attr-defined]
    return swept


# --- HTTP ----------------------------------------------------------------------------------------------------


async def merge_endpoint(request: Request) -> Response:
    """`POST /api/supporters/{id}/merge {"into": id}`: the survivor, with what moved."""
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        # Read after the role check: a role that may not merge is told 403 whatever it asks.
        from_id = parse_id(request.path_params["supporter_id"])
        body = schemas.parse_body(schemas.MergeIn, raw)
        result = merge_supporters(uow, from_id, body.into, by=principal.email)
        audit(uow, principal, "merge", "supporter", result.merged_id, result.to_json())
        survivor = crm_service.resolve_supporter(uow.session, result.into_id)
        return {**result.to_json(), "survivor": schemas.supporter_summary(survivor)}

    return JSON(await staff_call(request, MERGERS, work))


async def merge_preview_endpoint(request: Request) -> Response:
    """`GET /api/supporters/{id}/merge?into=id`: what a merge would move, changing nothing."""

    def work(uow: UnitOfWork, principal: Principal) -> dict[str, Any]:
        # Read after the role check: a role that may not merge is told 403 whatever it asks.
        from_id = parse_id(request.path_params["supporter_id"])
        into_id = parse_id(request.query_params.get("into", ""))
        result = preview_merge(uow, from_id, into_id)
        audit(uow, principal, "merge_preview", "supporter", result.merged_id, {"into": str(result.into_id)})
        return result.to_json()

    return JSON(await staff_call(request, MERGERS, work))


routes: list[BaseRoute] = [
    Route("/api/supporters/{supporter_id}/merge", merge_endpoint, methods=["POST"]),
    Route("/api/supporters/{supporter_id}/merge", merge_preview_endpoint, methods=["GET"]),
]
