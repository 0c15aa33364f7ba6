"""A day of card donations at scale, and the ledger it must leave, worked out from the plan alone.

`Scenario.plan(seed, ...)` decides, before anything runs, which donors give how much, which checkouts are paid or
abandoned and which paid gifts are partly refunded. The donors go through the real `POST /donate`; the fake Stripe
answers the SDK calls the workers make from the same plan; the events Stripe would send are built from it; and
`expected()` adds the plan up with plain arithmetic, never by reading what the application recorded.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.provider_server import FakeProvider, RecordedRequest

STARTED_AT = int(time.time()) - 3600


@dataclass
class PlannedCheckout:
    number: int
    email: str
    first_name: str
    last_name: str
    amount: int  # pence
    paid: bool
    refund: int | None = None  # pence, a partial or full refund of a paid gift
    # Known once the donor has been through /donate:
    session_id: str | None = None
    checkout_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def intent_id(self) -> str:
        return f"pi_scale_{self.number:05d}"

    @property
    def charge_id(self) -> str:
        return f"ch_scale_{self.number:05d}"

    @property
    def refund_id(self) -> str:
        return f"re_scale_{self.number:05d}"

    @property
    def charged_at(self) -> int:
        return STARTED_AT + self.number

    def form(self) -> dict[str, str]:
        pounds, pence = divmod(self.amount, 100)
        return {
            "amount": f"{pounds}.{pence:02d}",
            "frequency": "once",
            "method": "card",
            "title": "",
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "address_line1": f"{self.number % 90 + 1} High Street",
            "address_line2": "",
            "town": "Dover",
            "postcode": "CT16 1AA",
            "country": "GB",
        }


@dataclass
class Ledger:
    gifts: int
    gift_total: int
    refunds: int
    refund_total: int
    donated_by_email: dict[str, int]


@dataclass
class Scenario:
    checkouts: list[PlannedCheckout]
    seed: int

    @classmethod
    def plan(
        cls, seed: int, *, checkouts: int, donors: int, paid_share: float = 0.85, refund_share: float = 0.15
    ) -> Scenario:
        rng = random.Random(seed)
        people = [(f"donor{n:04d}@scale.example.org", f"Donor{n}", f"Scale{n % 37}") for n in range(donors)]
        planned = []
        for number in range(1, checkouts + 1):
            email, first, last = rng.choice(people)
            amount = rng.choice([100, 500, 1000, 1250, 2000, 2500, 5000, 10000]) + rng.randrange(0, 100)
            paid = rng.random() < paid_share
            refund = None
            if paid and rng.random() < refund_share:
                refund = amount if rng.random() < 0.3 else rng.randrange(1, amount)
            planned.append(PlannedCheckout(number, email, first, last, amount, paid, refund))
        return cls(planned, seed)

    def expected(self) -> Ledger:
        donated: dict[str, int] = defaultdict(int)
        gifts = gift_total = refunds = refund_total = 0
        for checkout in self.checkouts:
            donated.setdefault(checkout.email, 0)
            if not checkout.paid:
                continue
            gifts += 1
            gift_total += checkout.amount
            donated[checkout.email] += checkout.amount
            if checkout.refund:
                refunds += 1
                refund_total += checkout.refund
                donated[checkout.email] -= checkout.refund
        return Ledger(gifts, gift_total, refunds, refund_total, dict(donated))

    # --- what Stripe sends ----------------------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        ids = itertools.count(1)
        events = []
        for checkout in self.checkouts:
            assert checkout.session_id and checkout.checkout_id, "the donor has not been through /donate"
            if not checkout.paid:
                events.append(_event(next(ids), "checkout.session.expired", self._session(checkout, "expired")))
                continue
            events.append(_event(next(ids), "checkout.session.completed", self._session(checkout, "complete")))
            events.append(_event(next(ids), "payment_intent.succeeded", self._intent(checkout)))
            if checkout.refund:
                events.append(_event(next(ids), "charge.refunded", self._charge(checkout)))
                events.append(_event(next(ids), "refund.created", self._refund(checkout)))
        return events

    def _session(self, checkout: PlannedCheckout, status: str) -> dict[str, Any]:
        paid = status == "complete"
        return {
            "id": checkout.session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": status,
            "payment_status": "paid" if paid else "unpaid",
            "payment_intent": checkout.intent_id if paid else None,
            "amount_total": checkout.amount,
            "currency": "gbp",
            "client_reference_id": checkout.checkout_id,
            "metadata": checkout.metadata,
            "customer_details": {"email": checkout.email},
            "created": checkout.charged_at - 60,
        }

    def _intent(self, checkout: PlannedCheckout, *, expanded: bool = False) -> dict[str, Any]:
        return {
            "id": checkout.intent_id,
            "object": "payment_intent",
            "amount": checkout.amount,
            "amount_received": checkout.amount,
            "currency": "gbp",
            "status": "succeeded",
            "metadata": checkout.metadata,
            "latest_charge": self._charge(checkout, refunded=False) if expanded else checkout.charge_id,
            "created": checkout.charged_at,
        }

    def _charge(self, checkout: PlannedCheckout, *, refunded: bool = True) -> dict[str, Any]:
        refunded_amount = (checkout.refund or 0) if refunded else 0
        return {
            "id": checkout.charge_id,
            "object": "charge",
            "amount": checkout.amount,
            "amount_captured": checkout.amount,
            "amount_refunded": refunded_amount,
            "refunded": refunded_amount == checkout.amount,
            "currency": "gbp",
            "paid": True,
            "status": "succeeded",
            "payment_intent": checkout.intent_id,
            "created": checkout.charged_at,
            "metadata": checkout.metadata,
        }

    def _refund(self, checkout: PlannedCheckout) -> dict[str, Any]:
        return {
            "id": checkout.refund_id,
            "object": "refund",
            "amount": checkout.refund,
            "currency": "gbp",
            "status": "succeeded",
            "charge": checkout.charge_id,
            "payment_intent": checkout.intent_id,
            "reason": "requested_by_customer",
            "created": checkout.charged_at + 600,
        }

    # --- what Stripe answers ---------------------------------------------------------------------------------------

    def serve_stripe(self, server: FakeProvider) -> StripeFromPlan:
        return StripeFromPlan(self, server)


def _event(number: int, event_type: str, data_object: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"evt_scale_{number:06d}_{uuid.uuid4().hex[:6]}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "type": event_type,
        "created": int(data_object.get("created") or STARTED_AT) + 1,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": data_object},
    }


class StripeFromPlan:
    """The fake Stripe API for the scenario: sessions created by /donate (one per idempotency key, as Stripe does),
    payment intents with their charge, and each charge's refunds, all as planned."""

    def __init__(self, scenario: Scenario, server: FakeProvider):
        self.scenario = scenario
        self.by_intent = {c.intent_id: c for c in scenario.checkouts}
        self.by_charge = {c.charge_id: c for c in scenario.checkouts}
        self.sessions: dict[str, dict[str, Any]] = {}  # idempotency key -> session
        self.metadata_by_session: dict[str, dict[str, str]] = {}
        self.numbers = itertools.count(1)
        self.lock = threading.Lock()
        server.route("POST", r"/v1/checkout/sessions", self.create_session)
        server.route("GET", r"/v1/payment_intents/(?P<id>[^/]+)", self.retrieve_intent)
        server.route("GET", r"/v1/refunds", self.list_refunds)

    def create_session(self, request: RecordedRequest) -> tuple[int, Any]:
        key = request.headers.get("idempotency-key", "")
        metadata = {
            name[len("metadata[") : -1]: values[0]
            for name, values in request.form.items()
            if name.startswith("metadata[") and name.endswith("]")
        }
        with self.lock:
            if key not in self.sessions:
                session_id = f"cs_scale_{next(self.numbers):05d}"
                self.sessions[key] = {
                    "id": session_id,
                    "object": "checkout.session",
                    "mode": request.param("mode"),
                    "status": "open",
                    "url": f"https://checkout.stripe.test/c/pay/{session_id}",
                    "client_reference_id": request.param("client_reference_id"),
                    "metadata": metadata,
                }
                self.metadata_by_session[session_id] = metadata
            return 200, self.sessions[key]

    def retrieve_intent(self, request: RecordedRequest) -> tuple[int, Any]:
        assert request.match is not None
        checkout = self.by_intent.get(request.match["id"])
        if checkout is None:
            return 404, {"error": {"type": "invalid_request_error", "message": "No such payment_intent"}}
        return 200, self.scenario._intent(checkout, expanded=True)

    def list_refunds(self, request: RecordedRequest) -> tuple[int, Any]:
        checkout = self.by_charge.get(request.param("charge") or "")
        data = [self.scenario._refund(checkout)] if checkout is not None and checkout.refund else []
        return 200, {"object": "list", "data": data, "has_more": False, "url": "/v1/refunds"}

    def learn(self, checkout: PlannedCheckout, location: str) -> None:
        """After the donor's 303: which session Stripe made for this checkout, and our ids it carries."""
        session_id = urlsplit(location).path.rsplit("/", 1)[-1]
        with self.lock:
            metadata = self.metadata_by_session[session_id]
        checkout.session_id = session_id
        checkout.metadata = dict(metadata)
        checkout.checkout_id = metadata["checkout_id"]
