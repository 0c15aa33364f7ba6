"""Review s17d: shirts sent back in the journal.

A return was recorded with no date, so the journal placed it by the money refunded: a return recorded after its
refund was exported moved that refund's partner share postings when the period was exported again, and a return
whose money never went back (an exchange, a shirt given back) never reached the books, which kept owing the partner
the share the statement no longer owed. Now each return is kept dated when it is recorded, and gives back the share
it changes in its own entry on that day (`journal.return_postings`, in `giving export journal`).

Also: a basket whose shirts were refunded in full, its donation kept, stayed on the packing list and could be
marked posted."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from core.clock import uk_today
from core.runtime import Runtime
from core.settings import Settings
from payments.journal import PARTNER_COST, Posting
from tests.payments import factories_money as make
from tests.payments.payout_fakes import run_giving
from tests.payments.test_basket_refund_fixes import Basket, auth, basket, settings
from tests.payments.test_s16e_partner_share_journal import (
    APRIL,
    MARCH,
    OWED,
    Payouts,
    export,
    owed,
    payouts,
    refund_row,
    sale,
    send_back,
    statement_owed,
)
from tests.webhooks.support import EventsWorker, app_client, catalogue, worker

__all__ = ["app_client", "basket", "catalogue", "payouts", "settings", "worker"]


def exported(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Posting]:
    """Today's journal as `giving export journal` writes it (today: the day the returns were recorded)."""
    today = uk_today().isoformat()
    result = run_giving(["export", "journal", "--from", today, "--to", today], settings, monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    postings = []
    for row in csv.DictReader(io.StringIO(result.stdout)):
        pence = round(float(row["debit"] or 0) * 100) - round(float(row["credit"] or 0) * 100)
        postings.append(Posting(uk_today(), row["entry"], row["account"], pence, row["currency"], row["description"]))
    return postings


def test_a_return_recorded_after_its_refund_was_exported_leaves_that_period_as_exported(
    basket: Basket,
    worker: EventsWorker,
    runtime: Runtime,
    payouts: Payouts,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Three LMHR shirts (£15 owed) paid out in March; one refunded (£18.00) in April before staff record it sent
    back, and April exported. Recording the return afterwards leaves April as exported: the share it gives back is
    posted on the day it was recorded, and the books then owe the £10 the statement says."""
    basket.buy({"TEE-LMHR-M": "3"})
    basket.deliver(worker)
    payouts.pay("po_march", MARCH[0].replace(day=5), [sale(basket)])
    refund = basket.refund(1800)
    basket.deliver(worker)
    payouts.pay("po_april", APRIL[0].replace(day=5), [refund_row(basket, refund)])
    april = export(runtime, APRIL)
    assert owed(april) == 0, "a refund with no return recorded keeps the shirts (a goodwill refund, so far)"

    send_back(basket, 1)

    assert export(runtime, APRIL) == april, "an exported period never moves"
    returned = [p for p in exported(settings, monkeypatch, tmp_path) if p.entry.startswith("return:")]
    assert sorted((p.account, p.amount) for p in returned) == [(OWED, 500), (PARTNER_COST, -500)]
    assert owed(export(runtime, MARCH)) + owed(april) + owed(returned) == 1000 == statement_owed(basket)


def test_a_shirt_sent_back_with_no_money_back_reaches_the_books(
    basket: Basket,
    worker: EventsWorker,
    runtime: Runtime,
    payouts: Payouts,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Two LMHR shirts (£10 owed) paid out in March; one sent back and exchanged (no refund ever). The statement
    owes £5; the return's entry gives back the other £5, and nothing else: no money moved, so the sale, its VAT and
    its income stand, and the journal keeps no stock (the stock went back when the return was recorded)."""
    basket.buy({"TEE-LMHR-M": "2"})
    basket.deliver(worker)
    payouts.pay("po_march", MARCH[0].replace(day=5), [sale(basket)])

    send_back(basket, 1)

    returned = [p for p in exported(settings, monkeypatch, tmp_path) if p.entry.startswith("return:")]
    assert sorted((p.account, p.amount) for p in returned) == [(OWED, 500), (PARTNER_COST, -500)]
    assert owed(export(runtime, MARCH)) + owed(returned) == 500 == statement_owed(basket)


def test_a_basket_whose_shirts_were_refunded_in_full_is_not_posted(
    basket: Basket, worker: EventsWorker, runtime: Runtime
) -> None:
    """An £18 shirt and a £5 donation; the shirt refunded (£18, goods first) before it was posted, the donation
    kept: the order is `partially_refunded`, but nothing is left to post. It was on the packing list and could be
    marked posted (the shirt sent for nothing); now it is neither."""
    basket.buy({"TEE-LMHR-M": "1"}, donation="5")
    basket.refund(1800)
    basket.deliver(worker)
    body = basket.order_json()
    assert (body["status"], body["goods_refunded"]["amount"]) == ("partially_refunded", 1800)

    token = make.staff_token(runtime, "fundraiser")
    packing = basket.client.get("/api/orders?unfulfilled=1", headers=auth(token)).json()["items"]
    assert body["id"] not in [order["id"] for order in packing]
    refused = basket.client.post(f"/api/orders/{body['id']}/fulfil", headers=auth(token))
    assert refused.status_code == 409, refused.text
    assert basket.order_json()["fulfilled"] is False
