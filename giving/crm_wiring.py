"""Wires the other wings into crm (which imports none of them):

- supporter totals: `GET /api/supporters/{id}` shows what payments (`donated`, `purchases`, `regular_gifts`) and
  giftaid (`gift_aid_claimable`, `gift_aid_claimed`) report through `supporter_totals(session, supporter_ids)` in
  their services;
- whose a gift is: a declaration for one gift must name a gift of that supporter (`payments.service.gift_owner`);
- what a declaration changes: crm's declaration endpoints say which gifts a new, cancelled or confirmed declaration
  made claimable or not (`giftaid.service.watch_declarations`).
"""

from __future__ import annotations

import importlib
import logging

from crm import service as crm_service
from giftaid import service as giftaid_service
from payments import service as payments_service

log = logging.getLogger("giving.crm_wiring")

PROVIDERS = ("payments.service", "giftaid.service")


def wire_crm() -> list[str]:
    """Register every wing's `supporter_totals` that exists, payments' gift owner and giftaid's declaration
    watcher; returns the modules that have no totals yet."""
    crm_service.register_gift_owner(payments_service.gift_owner)
    crm_service.register_declaration_watcher(giftaid_service.watch_declarations)
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
