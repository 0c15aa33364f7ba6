"""The demo's payment providers: a stateful fake Stripe and GoCardless behind one loopback `FakeProvider` each.

They answer every SDK call our code makes (payments/providers/*): Checkout Sessions and Billing Requests created by
the donate and shop forms, then, as the demo plays the provider, payment intents with their charges, refunds,
disputes, subscriptions, invoices and their payments, mandates, Direct Debit subscriptions (our code creates the
monthly gift's) and payments (including the one our code creates for a one-off Direct Debit), payouts with their
balance transactions or payout items, and the event lists. GoCardless's own validation is applied too
(`gocardless_rules`): a billing request asking for a subscription on Bacs is refused, as the live API does.

The provider is always ahead of its webhooks: an object answers with its state after everything that happened to it,
whatever event is being processed. The object shapes follow the API versions the SDKs pin (Stripe 2026-10-28.endive,
GoCardless 2015-07-06), trimmed to the fields a small charity's integration reads.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import re
import threading
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from core.clock import uk_today
from giving.demo.provider import FakeProvider, RecordedRequest

STRIPE_API_VERSION = "2026-10-28.endive"
Json = dict[str, Any]


def nested(pairs: dict[str, list[str]]) -> Json:
    """Stripe's form encoding back into objects: `line_items[0][price_data][unit_amount]=500` → nested dicts/lists."""
    root: Json = {}
    for key, values in pairs.items():
        parts = re.findall(r"[^\[\]]+", key)
        if not parts:
            continue
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # a scalar and a nested key under one name: keep the nested one
                child = node[part] = {}
            node = child
        node[parts[-1]] = values[0] if len(values) == 1 else list(values)
    return _as_lists(root)  # type: ignore[no-any-return]


def _as_lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(str(key).isdigit() for key in node):
            return [_as_lists(node[key]) for key in sorted(node, key=int)]
        return {key: _as_lists(value) for key, value in node.items()}
    return node


def unix(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def gocardless_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def gocardless_moment(text: str) -> dt.datetime:
    """`gocardless_time` read back."""
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


# Our code creates a mandate's payment or subscription as soon as it learns of the mandate (the billing request's
# `fulfilled` event): in the story's time, this long after the donor set the mandate up.
CREATED_BY_US_AFTER = dt.timedelta(minutes=1)


# GoCardless's `billing_requests.create`: "All properties associated with subscription_request and
# instalment_schedule_request are only supported for ACH and PAD schemes" (gocardless-pro's docstring).
GOCARDLESS_PLAN_REQUESTS = ("subscription_request", "instalment_schedule_request")
GOCARDLESS_PLAN_SCHEMES = ("ach", "pad")


def gocardless_validation_failed(errors: list[Json], *, request_id: str = "fake") -> tuple[int, Json]:
    """GoCardless's documented 422 `validation_failed` answer, one entry per refused field."""
    return 422, {
        "error": {
            "type": "validation_failed",
            "code": 422,
            "message": "Validation failed",
            "errors": errors,
            "documentation_url": "https://developer.gocardless.com/api-reference#validation_failed",
            "request_id": request_id,
        }
    }


def gocardless_rules(request: RecordedRequest) -> tuple[int, Json] | None:
    """What GoCardless refuses whoever answers the route (`FakeProvider.rule`): a billing request asking for a
    subscription or an instalment schedule on any scheme but ACH and PAD, so on Bacs, our only scheme."""
    if request.method != "POST" or request.path.rstrip("/") != "/billing_requests":
        return None
    body = (request.json or {}).get("billing_requests") or {}
    scheme = str((body.get("mandate_request") or {}).get("scheme") or "bacs")  # GBP without a scheme is Bacs
    if scheme in GOCARDLESS_PLAN_SCHEMES:
        return None
    refused = [
        {
            "field": name,
            "message": f"is only supported for ACH and PAD schemes, not {scheme}",
            "request_pointer": f"/billing_requests/{name}",
        }
        for name in GOCARDLESS_PLAN_REQUESTS
        if body.get(name)
    ]
    return gocardless_validation_failed(refused) if refused else None


def stripe_card_fee(amount: int) -> int:
    """Stripe's UK card price: 1.5% + 20p, rounded half up."""
    return int((Decimal(amount) * Decimal("0.015")).quantize(Decimal(1), rounding=ROUND_HALF_UP)) + 20


class StripeWorld:
    """What Stripe holds for the charity's account. Ids are numbered, so a run is reproducible."""

    def __init__(self, server: FakeProvider):
        self.server = server
        self.lock = threading.RLock()
        self._numbers = itertools.count(1)
        self.sessions: dict[str, Json] = {}
        self.session_by_key: dict[str, str] = {}
        self.line_items: dict[str, list[Json]] = {}
        self.intents: dict[str, Json] = {}
        self.charges: dict[str, Json] = {}
        self.refunds: dict[str, list[Json]] = {}  # by charge
        self.disputes: dict[str, Json] = {}
        self.subscriptions: dict[str, Json] = {}
        self.invoices: dict[str, Json] = {}
        self.invoice_payments: dict[str, list[Json]] = {}
        self.payouts: dict[str, Json] = {}
        self.balance_transactions: dict[str, list[Json]] = {}  # by payout, the payout's own last
        self.unpaid_out: list[Json] = []  # balance transactions no payout has taken yet
        self.events: list[Json] = []
        self._install()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}demo{next(self._numbers):05d}"

    # --- the API ------------------------------------------------------------------------------------------------

    def _install(self) -> None:
        route = self.server.route
        route("POST", r"/v1/checkout/sessions", self._create_session)
        route("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", self._one(self.sessions))
        route("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)/line_items", self._session_line_items)
        route("GET", r"/v1/payment_intents/(?P<id>[^/]+)", self._payment_intent)
        route("GET", r"/v1/charges/(?P<id>[^/]+)", self._one(self.charges))
        route("GET", r"/v1/refunds", lambda r: self._list(r, self.refunds.get(r.param("charge") or "", [])))
        route("GET", r"/v1/disputes/(?P<id>[^/]+)", self._one(self.disputes))
        route("GET", r"/v1/subscriptions/(?P<id>[^/]+)", self._one(self.subscriptions))
        route("GET", r"/v1/invoices/(?P<id>[^/]+)", self._one(self.invoices))
        route(
            "GET",
            r"/v1/invoice_payments",
            lambda r: self._list(r, self.invoice_payments.get(r.param("invoice") or "", [])),
        )
        route("GET", r"/v1/payouts/(?P<id>[^/]+)", self._one(self.payouts))
        route("GET", r"/v1/balance_transactions", self._balance_transactions)
        route("GET", r"/v1/events", lambda r: self._list(r, list(reversed(self.events))))

    @staticmethod
    def _missing(what: str) -> tuple[int, Json]:
        return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing", "message": what}}

    def _one(self, store: dict[str, Json]) -> Callable[[RecordedRequest], tuple[int, Json]]:
        def answer(request: RecordedRequest) -> tuple[int, Json]:
            assert request.match is not None
            with self.lock:
                found = store.get(request.match["id"])
                if found is None:
                    return self._missing(f"No such object: '{request.match['id']}'")
                return 200, copy.deepcopy(found)

        return answer

    def _list(self, request: RecordedRequest, items: list[Json]) -> tuple[int, Json]:
        with self.lock:
            data = copy.deepcopy(items)
        return 200, {"object": "list", "data": data, "has_more": False, "url": request.path}

    def _create_session(self, request: RecordedRequest) -> tuple[int, Json]:
        params = nested(request.form)
        key = request.headers.get("idempotency-key", "")
        with self.lock:
            if key and key in self.session_by_key:
                return 200, copy.deepcopy(self.sessions[self.session_by_key[key]])
            session_id = self.new_id("cs_test_")
            items: list[Json] = []
            for number, line in enumerate(params.get("line_items") or []):
                price = line.get("price_data") or {}
                unit, quantity = int(price.get("unit_amount") or 0), int(line.get("quantity") or 1)
                items.append(
                    {
                        "id": f"li_{session_id}_{number}",
                        "object": "item",
                        "description": (price.get("product_data") or {}).get("name"),
                        "quantity": quantity,
                        "amount_subtotal": unit * quantity,
                        "amount_total": unit * quantity,
                        "currency": price.get("currency") or "gbp",
                        "price": {"unit_amount": unit, "recurring": price.get("recurring")},
                    }
                )
            total = sum(int(item["amount_total"]) for item in items)
            session = {
                "id": session_id,
                "object": "checkout.session",
                "mode": params.get("mode"),
                "status": "open",
                "payment_status": "unpaid",
                "url": f"{self.server.url}/c/pay/{session_id}",
                "client_reference_id": params.get("client_reference_id"),
                "metadata": params.get("metadata") or {},
                "customer_email": params.get("customer_email"),
                "customer": None,
                "currency": "gbp",
                "amount_subtotal": total,
                "amount_total": total,
                "submit_type": params.get("submit_type"),
                "payment_intent": None,
                "subscription": None,
                "invoice": None,
                "success_url": params.get("success_url"),
                "cancel_url": params.get("cancel_url"),
                "livemode": False,
                "created": unix(dt.datetime.now(dt.UTC)),
            }
            self.sessions[session_id] = session
            self.line_items[session_id] = items
            if key:
                self.session_by_key[key] = session_id
            return 200, copy.deepcopy(session)

    def _session_line_items(self, request: RecordedRequest) -> tuple[int, Json]:
        assert request.match is not None
        return self._list(request, self.line_items.get(request.match["id"], []))

    def _payment_intent(self, request: RecordedRequest) -> tuple[int, Json]:
        assert request.match is not None
        expand = nested(request.query).get("expand") or []
        with self.lock:
            intent = self.intents.get(request.match["id"])
            if intent is None:
                return self._missing(f"No such payment_intent: '{request.match['id']}'")
            answer = copy.deepcopy(intent)
            charge_id = answer.get("latest_charge")
            if "latest_charge" in expand and charge_id in self.charges:
                answer["latest_charge"] = copy.deepcopy(self.charges[charge_id])
            return 200, answer

    def _balance_transactions(self, request: RecordedRequest) -> tuple[int, Json]:
        query = nested(request.query)
        expand = query.get("expand") or []
        with self.lock:
            transactions = copy.deepcopy(self.balance_transactions.get(str(query.get("payout")), []))
            if "data.source" in expand:
                for bt in transactions:
                    bt["source"] = self._source(bt["source"])
        return 200, {"object": "list", "data": transactions, "has_more": False, "url": request.path}

    def _source(self, source_id: str) -> Any:
        for store in (self.charges, self.disputes, self.payouts):
            if source_id in store:
                return copy.deepcopy(store[source_id])
        for refunds in self.refunds.values():
            for refund in refunds:
                if refund["id"] == source_id:
                    return copy.deepcopy(refund)
        return source_id

    # --- what happens at Stripe ---------------------------------------------------------------------------------

    def session(self, session_id: str) -> Json:
        with self.lock:
            return self.sessions[session_id]

    def charge(self, amount: int, at: dt.datetime, metadata: Json, *, description: str = "") -> tuple[Json, Json]:
        """A succeeded card payment: its payment intent, its charge, and the charge's balance transaction."""
        with self.lock:
            intent_id, charge_id = self.new_id("pi_"), self.new_id("ch_")
            charge = {
                "id": charge_id,
                "object": "charge",
                "amount": amount,
                "amount_captured": amount,
                "amount_refunded": 0,
                "refunded": False,
                "captured": True,
                "paid": True,
                "status": "succeeded",
                "currency": "gbp",
                "created": unix(at),
                "payment_intent": intent_id,
                "balance_transaction": None,
                "description": description,
                "metadata": dict(metadata),
                "livemode": False,
            }
            intent = {
                "id": intent_id,
                "object": "payment_intent",
                "amount": amount,
                "amount_received": amount,
                "currency": "gbp",
                "status": "succeeded",
                "created": unix(at),
                "latest_charge": charge_id,
                "last_payment_error": None,
                "metadata": dict(metadata),
                "livemode": False,
            }
            self.charges[charge_id] = charge
            self.intents[intent_id] = intent
            charge["balance_transaction"] = self._settle(
                "charge", "charge", amount, stripe_card_fee(amount), charge_id, at
            )
            return intent, charge

    def _settle(self, bt_type: str, category: str, amount: int, fee: int, source: str, at: dt.datetime) -> str:
        bt = {
            "id": self.new_id("txn_"),
            "object": "balance_transaction",
            "type": bt_type,
            "reporting_category": category,
            "amount": amount,
            "fee": fee,
            "net": amount - fee,
            "currency": "gbp",
            "created": unix(at),
            "available_on": unix(at + dt.timedelta(days=2)),
            "source": source,
            "description": None,
        }
        self.unpaid_out.append(bt)
        return str(bt["id"])

    def complete_payment_session(self, session_id: str, at: dt.datetime) -> tuple[Json, Json]:
        """The donor paid on the hosted page: the session completes with its payment intent."""
        with self.lock:
            session = self.sessions[session_id]
            intent, charge = self.charge(int(session["amount_total"]), at, session["metadata"])
            session.update(
                {"status": "complete", "payment_status": "paid", "payment_intent": intent["id"], "created": unix(at)}
            )
            return intent, charge

    def start_subscription(self, session_id: str, at: dt.datetime, *, next_period_end: dt.datetime) -> Json:
        """The donor set up a monthly card gift: a customer and an active subscription."""
        with self.lock:
            session = self.sessions[session_id]
            subscription_id, customer_id = self.new_id("sub_"), self.new_id("cus_")
            subscription = {
                "id": subscription_id,
                "object": "subscription",
                "status": "active",
                "customer": customer_id,
                "currency": "gbp",
                "created": unix(at),
                "start_date": unix(at),
                "cancel_at_period_end": False,
                "canceled_at": None,
                "ended_at": None,
                "cancellation_details": {"reason": None, "comment": None, "feedback": None},
                "pause_collection": None,
                "items": {
                    "object": "list",
                    "data": [
                        {
                            "id": self.new_id("si_"),
                            "object": "subscription_item",
                            "quantity": 1,
                            "current_period_start": unix(at),
                            "current_period_end": unix(next_period_end),
                            "price": {"unit_amount": session["amount_total"], "recurring": {"interval": "month"}},
                        }
                    ],
                },
                "metadata": dict(session["metadata"]),
                "livemode": False,
            }
            self.subscriptions[subscription_id] = subscription
            session.update(
                {
                    "status": "complete",
                    "payment_status": "paid",
                    "subscription": subscription_id,
                    "customer": customer_id,
                    "created": unix(at),
                }
            )
            return subscription

    def invoice(
        self,
        subscription_id: str,
        amount: int,
        at: dt.datetime,
        *,
        attempts: list[tuple[dt.datetime, str | None]],
        first: bool,
    ) -> Json:
        """One month's invoice, charged once per attempt (an error message, or None for the attempt that paid)."""
        with self.lock:
            subscription = self.subscriptions[subscription_id]
            invoice_id = self.new_id("in_")
            paid_at = next((moment for moment, error in attempts if error is None), None)
            if paid_at is not None:
                intent, _ = self.charge(amount, paid_at, subscription["metadata"])
            else:
                intent = {
                    "id": self.new_id("pi_"),
                    "object": "payment_intent",
                    "amount": amount,
                    "currency": "gbp",
                    "status": "requires_payment_method",
                    "latest_charge": None,
                    "last_payment_error": {"code": "card_declined", "message": attempts[-1][1]},
                    "metadata": dict(subscription["metadata"]),
                }
                self.intents[intent["id"]] = intent
            invoice = {
                "id": invoice_id,
                "object": "invoice",
                "status": "paid" if paid_at else "open",
                "amount_due": amount,
                "amount_paid": amount if paid_at else 0,
                "amount_remaining": 0 if paid_at else amount,
                "attempt_count": len(attempts),
                "attempted": True,
                "billing_reason": "subscription_create" if first else "subscription_cycle",
                "collection_method": "charge_automatically",
                "currency": "gbp",
                "customer": subscription["customer"],
                "created": unix(at),
                "period_start": unix(at),
                "period_end": unix(at + dt.timedelta(days=30)),
                "status_transitions": {"finalized_at": unix(at), "paid_at": unix(paid_at) if paid_at else None},
                "parent": {
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": {"subscription": subscription_id, "metadata": {}},
                },
                "payments": None,
                "last_finalization_error": None,
                "livemode": False,
            }
            self.invoices[invoice_id] = invoice
            self.invoice_payments[invoice_id] = [
                {
                    "id": self.new_id("inpay_"),
                    "object": "invoice_payment",
                    "invoice": invoice_id,
                    "status": "paid" if paid_at else "open",
                    "amount_paid": amount if paid_at else 0,
                    "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
                }
            ]
            return invoice

    def refund(self, charge_id: str, amount: int, at: dt.datetime, *, reason: str = "requested_by_customer") -> Json:
        with self.lock:
            charge = self.charges[charge_id]
            refund = {
                "id": self.new_id("re_"),
                "object": "refund",
                "amount": amount,
                "currency": "gbp",
                "charge": charge_id,
                "payment_intent": charge["payment_intent"],
                "status": "succeeded",
                "reason": reason,
                "created": unix(at),
                "balance_transaction": None,
                "metadata": {},
            }
            refund["balance_transaction"] = self._settle("refund", "refund", -amount, 0, str(refund["id"]), at)
            self.refunds.setdefault(charge_id, []).append(refund)
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            return refund

    def dispute(self, charge_id: str, *, opened: dt.datetime, status: str, fee: int) -> Json:
        """A card dispute: the amount and Stripe's fee are taken when it opens; a lost one is never given back."""
        with self.lock:
            charge = self.charges[charge_id]
            amount = int(charge["amount"]) - int(charge["amount_refunded"])
            dispute_id = self.new_id("dp_")
            withdrawal = {
                "amount": -amount,
                "fee": fee,
                "net": -amount - fee,
                "reporting_category": "dispute",
                "type": "adjustment",
            }
            withdrawal["id"] = self._settle("adjustment", "dispute", -amount, fee, dispute_id, opened)
            dispute = {
                "id": dispute_id,
                "object": "dispute",
                "amount": amount,
                "currency": "gbp",
                "charge": charge_id,
                "payment_intent": charge["payment_intent"],
                "reason": "fraudulent",
                "status": status,
                "created": unix(opened),
                "is_charge_refundable": False,
                "balance_transactions": [withdrawal],
                "evidence_details": {"due_by": unix(opened + dt.timedelta(days=7)), "submission_count": 1},
                "metadata": {},
                "livemode": False,
            }
            self.disputes[dispute_id] = dispute
            charge["disputed"] = True
            return dispute

    def pay_out(self, up_to: dt.datetime, arrival: dt.datetime) -> Json:
        """Everything settled before `up_to` goes to the bank in one payout (its reconciliation is complete)."""
        with self.lock:
            taken = [bt for bt in self.unpaid_out if bt["created"] <= unix(up_to)]
            self.unpaid_out = [bt for bt in self.unpaid_out if bt["created"] > unix(up_to)]
            net = sum(int(bt["net"]) for bt in taken)
            payout_id = self.new_id("po_")
            payout = {
                "id": payout_id,
                "object": "payout",
                "amount": net,
                "currency": "gbp",
                "status": "paid",
                "type": "bank_account",
                "method": "standard",
                "automatic": True,
                "created": unix(up_to),
                "arrival_date": unix(arrival),
                "reconciliation_status": "completed",
                "statement_descriptor": "CALAIS REFUGEE AID",
                "balance_transaction": None,
                "livemode": False,
            }
            own = {
                "id": self.new_id("txn_"),
                "object": "balance_transaction",
                "type": "payout",
                "reporting_category": "payout",
                "amount": -net,
                "fee": 0,
                "net": -net,
                "currency": "gbp",
                "created": unix(up_to),
                "source": payout_id,
                "description": "STRIPE PAYOUT",
            }
            payout["balance_transaction"] = own["id"]
            self.payouts[payout_id] = payout
            self.balance_transactions[payout_id] = [*taken, own]
            return payout

    def event(self, event_type: str, data_object: Json, created: dt.datetime) -> Json:
        with self.lock:
            event = {
                "id": self.new_id("evt_"),
                "object": "event",
                "api_version": STRIPE_API_VERSION,
                "type": event_type,
                "created": unix(created),
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "data": {"object": copy.deepcopy(data_object)},
            }
            self.events.append(event)
            return event


class GoCardlessWorld:
    """What GoCardless holds for the charity's creditor. Ids are numbered, so a run is reproducible."""

    def __init__(self, server: FakeProvider):
        self.server = server
        self.lock = threading.RLock()
        self._numbers = itertools.count(1)
        self.billing_requests: dict[str, Json] = {}
        self.created_by_key: dict[str, tuple[str, str]] = {}  # idempotency key → (resource, id)
        self.flows: dict[str, Json] = {}
        self.customers: dict[str, Json] = {}
        self.mandates: dict[str, Json] = {}
        self.subscriptions: dict[str, Json] = {}
        self.payments: dict[str, Json] = {}
        self.refunds: dict[str, Json] = {}
        self.payouts: dict[str, Json] = {}
        self.payout_items: dict[str, list[Json]] = {}
        self.events: list[Json] = []
        # When our code creates a payment (a one-off Direct Debit), its charge date: by the checkout in its metadata.
        self.charge_dates: dict[str, dt.date] = {}
        self._install()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}DEMO{next(self._numbers):05d}"

    # --- the API ------------------------------------------------------------------------------------------------

    def _install(self) -> None:
        self.server.rule(gocardless_rules)
        route = self.server.route
        route("POST", r"/billing_requests", self._create_billing_request)
        route("POST", r"/billing_request_flows", self._create_flow)
        route("GET", r"/billing_requests/(?P<id>[^/]+)", self._one(self.billing_requests, "billing_requests"))
        route("GET", r"/mandates/(?P<id>[^/]+)", self._one(self.mandates, "mandates"))
        route("GET", r"/customers/(?P<id>[^/]+)", self._one(self.customers, "customers"))
        route("GET", r"/subscriptions/(?P<id>[^/]+)", self._one(self.subscriptions, "subscriptions"))
        route("POST", r"/subscriptions", self._create_subscription)
        route("GET", r"/payments/(?P<id>[^/]+)", self._one(self.payments, "payments"))
        route("POST", r"/payments", self._create_payment)
        route("GET", r"/refunds/(?P<id>[^/]+)", self._one(self.refunds, "refunds"))
        route("GET", r"/payouts/(?P<id>[^/]+)", self._one(self.payouts, "payouts"))
        route("GET", r"/payout_items", self._payout_items)
        route("GET", r"/events", lambda r: (200, self._page("events", list(reversed(self.events)))))

    @staticmethod
    def _page(envelope: str, items: list[Json]) -> Json:
        return {envelope: copy.deepcopy(items), "meta": {"cursors": {"before": None, "after": None}, "limit": 500}}

    @staticmethod
    def _error(status: int, error_type: str, message: str) -> tuple[int, Json]:
        return status, {
            "error": {
                "type": error_type,
                "code": status,
                "message": message,
                "errors": [{"reason": error_type, "message": message}],
                "documentation_url": "https://developer.gocardless.com/api-reference#errors",
                "request_id": "demo",
            }
        }

    def _one(self, store: dict[str, Json], envelope: str) -> Callable[[RecordedRequest], tuple[int, Json]]:
        def answer(request: RecordedRequest) -> tuple[int, Json]:
            assert request.match is not None
            with self.lock:
                found = store.get(request.match["id"])
                if found is None:
                    return self._error(404, "invalid_api_usage", "Resource not found")
                return 200, {envelope: copy.deepcopy(found)}

        return answer

    def _existing(self, request: RecordedRequest, envelope: str, store: dict[str, Json]) -> tuple[int, Json] | None:
        """A repeated idempotency key answers the object it created the first time."""
        made = self.created_by_key.get(request.headers.get("idempotency-key", ""))
        if made is not None and made[0] == envelope:
            return 201, {envelope: copy.deepcopy(store[made[1]])}
        return None

    def _remember(self, request: RecordedRequest, envelope: str, object_id: str) -> None:
        key = request.headers.get("idempotency-key", "")
        if key:
            self.created_by_key[key] = (envelope, object_id)

    def _create_billing_request(self, request: RecordedRequest) -> tuple[int, Json]:
        body = (request.json or {}).get("billing_requests") or {}
        with self.lock:
            existing = self._existing(request, "billing_requests", self.billing_requests)
            if existing:
                return existing
            request_id = self.new_id("BRQ")
            billing_request = {
                "id": request_id,
                "status": "pending",
                "created_at": gocardless_time(dt.datetime.now(dt.UTC)),
                "mandate_request": body.get("mandate_request"),
                "subscription_request": body.get("subscription_request"),
                "payment_request": body.get("payment_request"),
                "metadata": body.get("metadata") or {},
                "links": {},
            }
            self.billing_requests[request_id] = billing_request
            self._remember(request, "billing_requests", request_id)
            return 201, {"billing_requests": copy.deepcopy(billing_request)}

    def _create_flow(self, request: RecordedRequest) -> tuple[int, Json]:
        body = (request.json or {}).get("billing_request_flows") or {}
        with self.lock:
            flow_id = self.new_id("BRF")
            flow = {
                "id": flow_id,
                "authorisation_url": f"{self.server.url}/billing/static/flow?id={flow_id}",
                "links": body.get("links") or {},
                "redirect_uri": body.get("redirect_uri"),
                "exit_uri": body.get("exit_uri"),
                "prefilled_customer": body.get("prefilled_customer") or {},
                "created_at": gocardless_time(dt.datetime.now(dt.UTC)),
            }
            self.flows[flow_id] = flow
            return 201, {"billing_request_flows": copy.deepcopy(flow)}

    def _create_payment(self, request: RecordedRequest) -> tuple[int, Json]:
        body = (request.json or {}).get("payments") or {}
        with self.lock:
            existing = self._existing(request, "payments", self.payments)
            if existing:
                return existing
            mandate_id = (body.get("links") or {}).get("mandate")
            if mandate_id not in self.mandates:
                return self._error(422, "validation_failed", "Mandate not found")
            metadata = body.get("metadata") or {}
            charge_date = self.charge_dates.get(str(metadata.get("checkout_id")), uk_today())
            payment = self.payment(
                mandate_id,
                int(body.get("amount") or 0),
                charge_date,
                metadata=metadata,
                subscription_id=None,
                created=self._created_by_us(mandate_id),
            )
            payment["description"] = body.get("description") or ""
            self._remember(request, "payments", payment["id"])
            return 201, {"payments": copy.deepcopy(payment)}

    def _create_subscription(self, request: RecordedRequest) -> tuple[int, Json]:
        body = (request.json or {}).get("subscriptions") or {}
        with self.lock:
            existing = self._existing(request, "subscriptions", self.subscriptions)
            if existing:
                return existing
            mandate_id = (body.get("links") or {}).get("mandate")
            if mandate_id not in self.mandates:
                return self._error(422, "validation_failed", "Mandate not found")
            # Without a start_date GoCardless starts at the mandate's first possible charge date.
            start = body.get("start_date") or self.mandates[mandate_id].get("next_possible_charge_date")
            subscription = self.subscription(
                mandate_id,
                int(body.get("amount") or 0),
                dt.date.fromisoformat(start) if start else uk_today(),
                metadata=body.get("metadata") or {},
                created=self._created_by_us(mandate_id),
            )
            if body.get("name"):
                subscription["name"] = body["name"]
            self._remember(request, "subscriptions", subscription["id"])
            return 201, {"subscriptions": copy.deepcopy(subscription)}

    def _created_by_us(self, mandate_id: str) -> dt.datetime:
        """When our code created an object on this mandate, in the story's time: the story is back-dated, so
        neither the wall clock's now nor the first charge date (which had the monthly gift start on the day of
        its first payment, as Bacs's notice forbids)."""
        return gocardless_moment(self.mandates[mandate_id]["created_at"]) + CREATED_BY_US_AFTER

    def _payout_items(self, request: RecordedRequest) -> tuple[int, Json]:
        with self.lock:
            items = self.payout_items.get(request.param("payout") or "")
            if items is None:
                return self._error(404, "invalid_api_usage", "Resource not found")
            return 200, self._page("payout_items", items)

    # --- what happens at GoCardless -----------------------------------------------------------------------------

    def billing_request(self, request_id: str) -> Json:
        with self.lock:
            return self.billing_requests[request_id]

    def fulfil(self, request_id: str, at: dt.datetime, *, first_charge: dt.date) -> Json:
        """The donor authorised the mandate in the flow: a customer and an active Bacs mandate, first chargeable on
        `first_charge`. A monthly gift's subscription is not GoCardless's to make here: a billing request cannot ask
        for one on Bacs (`gocardless_rules`), so our code creates it on `billing_requests.fulfilled`."""
        with self.lock:
            billing_request = self.billing_requests[request_id]
            customer_id, mandate_id = self.new_id("CU"), self.new_id("MD")
            self.customers[customer_id] = {"id": customer_id, "created_at": gocardless_time(at)}
            self.mandates[mandate_id] = {
                "id": mandate_id,
                "status": "active",
                "scheme": "bacs",
                "reference": f"CALAIS-{mandate_id[-5:]}",
                "created_at": gocardless_time(at),
                "next_possible_charge_date": first_charge.isoformat(),
                "metadata": dict((billing_request.get("mandate_request") or {}).get("metadata") or {}),
                "links": {"customer": customer_id, "customer_bank_account": self.new_id("BA")},
            }
            links = {
                "customer": customer_id,
                "mandate_request": self.new_id("MRQ"),
                "mandate_request_mandate": mandate_id,
            }
            billing_request.update({"status": "fulfilled", "links": links})
            return billing_request

    def subscription(
        self, mandate_id: str, amount: int, start: dt.date, *, metadata: Json, created: dt.datetime
    ) -> Json:
        """`created`: when it was made (payments.service dates a regular gift's start by it), before `start`, the
        first charge date: a Bacs collection is notified days ahead."""
        with self.lock:
            subscription_id = self.new_id("SB")
            subscription = {
                "id": subscription_id,
                "amount": amount,
                "currency": "GBP",
                "status": "active",
                "name": "Monthly donation",
                "interval": 1,
                "interval_unit": "monthly",
                "day_of_month": None,
                "start_date": start.isoformat(),
                "created_at": gocardless_time(created),
                "upcoming_payments": [],
                "metadata": dict(metadata),
                "links": {"mandate": mandate_id},
            }
            self.subscriptions[subscription_id] = subscription
            return subscription

    def payment(
        self,
        mandate_id: str,
        amount: int,
        charge_date: dt.date,
        *,
        metadata: Json,
        subscription_id: str | None,
        created: dt.datetime,
    ) -> Json:
        """`created`: when it was made, days before its `charge_date` (its `payments.created` event's time)."""
        with self.lock:
            payment_id = self.new_id("PM")
            links = {"mandate": mandate_id, "creditor": "CRDEMO00001"}
            if subscription_id:
                links["subscription"] = subscription_id
            payment = {
                "id": payment_id,
                "amount": amount,
                "amount_refunded": 0,
                "currency": "GBP",
                "status": "pending_submission",
                "charge_date": charge_date.isoformat(),
                "created_at": gocardless_time(created),
                "description": "Monthly donation" if subscription_id else "Gift",
                "reference": None,
                "retry_if_possible": True,
                "metadata": dict(metadata),
                "links": links,
            }
            self.payments[payment_id] = payment
            return payment

    def set_status(self, store: dict[str, Json], object_id: str, status: str) -> Json:
        with self.lock:
            store[object_id]["status"] = status
            return store[object_id]

    def pay_out(self, items: list[Json], arrival: dt.date) -> Json:
        """A payout of these items (payments paid out, fees, chargebacks), each amount in exact pence."""
        with self.lock:
            payout_id = self.new_id("PO")
            total = sum((Decimal(item["amount"]) for item in items), Decimal(0))
            fees = -sum((Decimal(item["amount"]) for item in items if item["type"] == "gocardless_fee"), Decimal(0))
            payout = {
                "id": payout_id,
                "amount": int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP)),
                "currency": "GBP",
                "status": "paid",
                "payout_type": "merchant",
                "arrival_date": arrival.isoformat(),
                "created_at": gocardless_time(dt.datetime.combine(arrival, dt.time(7), dt.UTC)),
                "deducted_fees": int(fees.quantize(Decimal(1), rounding=ROUND_HALF_UP)),
                "reference": f"CALAIS-{payout_id[-5:]}",
                "metadata": {},
                "links": {"creditor": "CRDEMO00001", "creditor_bank_account": "BADEMO00001"},
            }
            self.payouts[payout_id] = payout
            self.payout_items[payout_id] = [copy.deepcopy(item) for item in items]
            return payout

    def event(self, resource: str, action: str, links: dict[str, str], created: dt.datetime, **details: Any) -> Json:
        with self.lock:
            event = {
                "id": self.new_id("EV"),
                "created_at": gocardless_time(created),
                "resource_type": resource,
                "action": action,
                "links": {**links, "organisation": "OR0DEMO0001"},
                "details": {
                    "origin": details.pop("origin", "gocardless"),
                    "cause": details.pop("cause", action),
                    "description": details.pop("description", f"The {resource[:-1].replace('_', ' ')} was {action}."),
                    **details,
                },
                "metadata": {},
                "resource_metadata": {},
            }
            self.events.append(event)
            return event
