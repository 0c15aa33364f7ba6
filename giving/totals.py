"""Wires the wings' supporter totals into crm (which imports no other wing): `GET /api/supporters/{id}` shows
what payments (`donated`, `purchases`, `regular_gifts`) and giftaid (`gift_aid_claimable`, `gift_aid_claimed`)
report through `supporter_totals(session, supporter_ids)` in their services."""

from __future__ import annotations

import importlib
import logging

from crm import service as crm_service

log = logging.getLogger("giving.totals")

PROVIDERS = ("payments.service", "giftaid.service")


def register_totals_providers() -> list[str]:
    """Register every wing's `supporter_totals` that exists; returns the modules that have none yet."""
    missing = []
    for name in PROVIDERS:
        provider = getattr(importlib.import_module(name), "supporter_totals", None)
        if callable(provider):
            crm_service.register_totals_provider(provider)
        else:
            missing.append(name)
    if missing:
        log.warning("no supporter_totals in %s: those totals show as zero", ", ".join(missing))
    return missing
