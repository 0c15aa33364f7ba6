"""Provider worlds and delivery scenarios built from the shared fixtures, with the ledger they must produce.

A *world* is what the fake provider API answers when our code re-fetches an object (its state after every event of
the scenario: the provider is always ahead of its webhooks). A *story* is one donor journey: it seeds the rows our
checkout would have written before the redirect, adds the provider's objects to the world, emits the signed events
the provider would send, and states the expected result from its own parameters (never from our code).

Every amount is in pence. Events are built from `../shared/fixtures/` envelopes with ids, amounts and times set.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sqlmodel import select

from core.runtime import Runtime
from crm.models import Supporter
from payments.models import (
    Checkout,
    CheckoutKind,
    CheckoutStatus,
    Frequency,
    Method,
    Order,
    OrderLine,
    Provider,
    Sku,
)
from tests.fakes.provider_server import FakeProvider, RecordedRequest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures"


@cache
def _fixture_text(relative: str) -> str:
    return (FIXTURES / relative).read_text(encoding="utf-8")


def fixture(relative: str) -> Any:
    return json.loads(_fixture_text(relative))


_numbers = itertools.count(1)
_numbers_lock = threading.Lock()


def unique(prefix: str) -> str:
    with _numbers_lock:
        return f"{prefix}{next(_numbers):05d}{uuid.uuid4().hex[:6]}"


BASE_TIME = int(dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC).timestamp())
DAY = 86_400


# --- the provider side -------------------------------------------------------------------------------------------


@dataclass
class StripeWorld:
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by charge
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoice_payments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # what events.list answers

    def install(self, server: FakeProvider) -> None:
        def one(store: dict[str, dict[str, Any]]) -> Any:
            def answer(request: RecordedRequest) -> tuple[int, Any]:
                assert request.match is not None
                found = store.get(request.match["id"])
                if found is None:
                    return 404, {"error": {"type": "invalid_request_error", "message": "No such object"}}
                return 200, found

            return answer

        def listing(request: RecordedRequest, items: list[dict[str, Any]], url: str) -> tuple[int, Any]:
            return 200, {"object": "list", "data": items, "has_more": False, "url": url}

        server.route("GET", r"/v1/payment_intents/(?P<id>[^/]+)", one(self.intents))
        server.route("GET", r"/v1/subscriptions/(?P<id>[^/]+)", one(self.subscriptions))

        def cancel_subscription(request: RecordedRequest) -> tuple[int, Any]:
            """`DELETE /v1/subscriptions/{id}` as Stripe answers: the subscription canceled now, or a refusal for one
            that already is."""
            assert request.match is not None
            found = self.subscriptions.get(request.match["id"])
            if found is None:
                return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
            if found.get("status") in ("canceled", "incomplete_expired"):
                message = "A canceled subscription can only update its cancellation_details and metadata."
                return 400, {"error": {"type": "invalid_request_error", "message": message}}
            now = BASE_TIME + 40 * DAY
            details = {"reason": "cancellation_requested", "comment": request.param("cancellation_details[comment]")}
            found.update(status="canceled", canceled_at=now, ended_at=now, cancellation_details=details)
            return 200, found

        server.route("DELETE", r"/v1/subscriptions/(?P<id>[^/]+)", cancel_subscription)
        server.route("GET", r"/v1/disputes/(?P<id>[^/]+)", one(self.disputes))
        server.route(
            "GET", r"/v1/refunds", lambda r: listing(r, self.refunds.get(r.param("charge") or "", []), "/v1/refunds")
        )
        server.route(
            "GET",
            r"/v1/invoice_payments",
            lambda r: listing(r, self.invoice_payments.get(r.param("invoice") or "", []), "/v1/invoice_payments"),
        )
        server.route("GET", r"/v1/events", lambda r: listing(r, self.events, "/v1/events"))


@dataclass
class GoCardlessWorld:
    billing_requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    mandates: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Objects that POST creates, by idempotency key (a repeated key answers the same object, as GoCardless does).
    created_subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def install(self, server: FakeProvider) -> None:
        def one(store: dict[str, dict[str, Any]], envelope: str) -> Any:
            def answer(request: RecordedRequest) -> tuple[int, Any]:
                assert request.match is not None
                found = store.get(request.match["id"])
                if found is None:
                    return 404, {"error": {"type": "invalid_api_usage", "code": 404, "message": "Resource not found"}}
                return 200, {envelope: found}

            return answer

        def create(by_key: dict[str, dict[str, Any]], envelope: str) -> Any:
            def answer(request: RecordedRequest) -> tuple[int, Any]:
                key = request.headers.get("idempotency-key", "")
                for suffix, made in by_key.items():
                    if key.endswith(suffix):
                        return 201, {envelope: made}
                return 422, {"error": {"type": "validation_failed", "code": 422, "message": f"unexpected {key}"}}

            return answer

        server.route("GET", r"/billing_requests/(?P<id>[^/]+)", one(self.billing_requests, "billing_requests"))
        server.route("GET", r"/mandates/(?P<id>[^/]+)", one(self.mandates, "mandates"))
        server.route("GET", r"/subscriptions/(?P<id>[^/]+)", one(self.subscriptions, "subscriptions"))
        server.route("GET", r"/payments/(?P<id>[^/]+)", one(self.payments, "payments"))
        server.route("GET", r"/refunds/(?P<id>[^/]+)", one(self.refunds, "refunds"))
        server.route("POST", r"/subscriptions", create(self.created_subscriptions, "subscriptions"))

        def cancel(store: dict[str, dict[str, Any]], envelope: str, live: set[str]) -> Any:
            """`POST /{envelope}/{id}/actions/cancel` as GoCardless answers: cancelled now, or `cancellation_failed`
            (422, invalid_state) for one already ended."""

            def answer(request: RecordedRequest) -> tuple[int, Any]:
                assert request.match is not None
                found = store.get(request.match["id"])
                if found is None:
                    return 404, {"error": {"type": "invalid_api_usage", "code": 404, "message": "Resource not found"}}
                if found.get("status") not in live:
                    error = {"reason": "cancellation_failed", "message": f"{envelope} cannot be cancelled"}
                    return 422, {"error": {"type": "invalid_state", "code": 422, "errors": [error], **error}}
                found["status"] = "cancelled"
                return 200, {envelope: found}

            return answer

        live_subscription = {"pending_customer_approval", "active", "paused"}
        live_mandate = {"pending_customer_approval", "pending_submission", "submitted", "active", "suspended_by_payer"}
        server.route(
            "POST",
            r"/subscriptions/(?P<id>[^/]+)/actions/cancel",
            cancel(self.subscriptions, "subscriptions", live_subscription),
        )
        server.route("POST", r"/mandates/(?P<id>[^/]+)/actions/cancel", cancel(self.mandates, "mandates", live_mandate))
        # A billing request the payer has not completed can be cancelled; one fulfilled (or ended) is refused.
        server.route(
            "POST",
            r"/billing_requests/(?P<id>[^/]+)/actions/cancel",
            cancel(self.billing_requests, "billing_requests", {"pending", "ready_to_fulfil"}),
        )
        server.route("POST", r"/payments", create(self.created_payments, "payments"))
        server.route(
            "GET",
            r"/events",
            lambda r: (200, {"events": self.events, "meta": {"cursors": {"after": None}, "limit": 50}}),
        )


# --- deliveries --------------------------------------------------------------------------------------------------


@dataclass
class Delivery:
    provider: str  # "stripe" | "gocardless"
    event: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.event["id"])


def stripe_event(event_type: str, data_object: dict[str, Any], *, created: int) -> dict[str, Any]:
    envelope = copy.deepcopy(fixture("stripe/event.stripe-mock.json"))
    envelope.update(
        {
            "id": unique("evt_"),
            "type": event_type,
            "created": created,
            "livemode": False,
            "api_version": "2026-10-28.endive",
            "data": {"object": data_object},
        }
    )
    envelope.pop("context", None)
    return envelope


def gocardless_event(
    resource: str, action: str, links: dict[str, str], *, created: int, **details: Any
) -> dict[str, Any]:
    moment = dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "id": unique("EV"),
        "created_at": moment,
        "resource_type": resource,
        "action": action,
        "links": {**links, "organisation": "OR0TEST"},
        "details": {"origin": "gocardless", "cause": details.pop("cause", action), **details},
        "metadata": {},
        "resource_metadata": {},
    }


def gocardless_body(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"events": events, "meta": {"webhook_id": unique("WB")}}


# --- the ledger a scenario must produce ---------------------------------------------------------------------------


@dataclass
class ExpectedGift:
    status: str
    amount: int
    returned: int = 0


@dataclass
class Expected:
    gifts: dict[str, ExpectedGift] = field(default_factory=dict)  # keyed by the provider id that keys the gift
    orders: dict[str, tuple[str, int]] = field(default_factory=dict)  # checkout session → (status, refunded goods)
    regular: dict[str, str] = field(default_factory=dict)  # subscription id → status
    supporters: dict[uuid.UUID, dict[str, int]] = field(default_factory=dict)  # donated, purchases, regular_gifts

    def add_totals(self, supporter_id: uuid.UUID, *, donated: int = 0, purchases: int = 0, regular: int = 0) -> None:
        totals = self.supporters.setdefault(supporter_id, {"donated": 0, "purchases": 0, "regular_gifts": 0})
        totals["donated"] += donated
        totals["purchases"] += purchases
        totals["regular_gifts"] += regular


# --- rows our checkout writes before the redirect ----------------------------------------------------------------


def seed_supporter(runtime: Runtime, name: str) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        supporter = Supporter(
            email=f"{name.lower()}.{uuid.uuid4().hex[:6]}@example.org", first_name=name, last_name="Donor"
        )
        uow.session.add(supporter)
        uow.session.flush()
        return supporter.id


def seed_checkout(
    runtime: Runtime,
    supporter_id: uuid.UUID,
    *,
    amount: int,
    frequency: Frequency = Frequency.ONCE,
    method: Method = Method.CARD,
    appeal: str | None = None,
    order_id: uuid.UUID | None = None,
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        checkout = Checkout(
            kind=CheckoutKind.SHOP if order_id else CheckoutKind.DONATION,
            supporter_id=supporter_id,
            amount=amount,
            frequency=frequency,
            method=method,
            appeal=appeal,
            order_id=order_id,
            donor={"first_name": "A", "last_name": "Donor", "address_line1": "1 High St", "postcode": "N1 1AA"},
            status=CheckoutStatus.OPEN,
            provider=Provider.STRIPE if method == Method.CARD else Provider.GOCARDLESS,
        )
        uow.session.add(checkout)
        uow.session.flush()
        return checkout.id


def seed_order(
    runtime: Runtime, supporter_id: uuid.UUID, *, sku: str, quantity: int, donation: int
) -> tuple[uuid.UUID, int]:
    """A basket of one shirt line and a donation line; returns (order id, goods total)."""
    with runtime.unit_of_work() as uow:
        found = uow.session.exec(select(Sku).where(Sku.sku == sku)).one()
        goods = found.price * quantity
        order = Order(supporter_id=supporter_id, goods_amount=goods, donation_amount=donation)
        uow.session.add(order)
        uow.session.flush()
        uow.session.add(
            OrderLine(
                order_id=order.id,
                sku=sku,
                product_name="T-shirt",
                size=found.size,
                quantity=quantity,
                unit_price=found.price,
            )
        )
        return order.id, goods


# --- stories -----------------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    runtime: Runtime
    stripe: StripeWorld = field(default_factory=StripeWorld)
    gocardless: GoCardlessWorld = field(default_factory=GoCardlessWorld)
    deliveries: list[Delivery] = field(default_factory=list)
    expected: Expected = field(default_factory=Expected)
    clock: int = BASE_TIME

    def tick(self, seconds: int = 60) -> int:
        self.clock += seconds
        return self.clock

    def _stripe(self, event_type: str, data_object: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
        event = stripe_event(event_type, data_object, created=created or self.tick())
        self.deliveries.append(Delivery("stripe", event))
        self.stripe.events.append(event)
        return event

    def _gocardless(self, resource: str, action: str, links: dict[str, str], **details: Any) -> dict[str, Any]:
        event = gocardless_event(resource, action, links, created=self.tick(), **details)
        self.deliveries.append(Delivery("gocardless", event))
        self.gocardless.events.append(event)
        return event

    # Stripe objects from the fixtures

    def _session_object(self, checkout_id: uuid.UUID, **values: Any) -> dict[str, Any]:
        session = copy.deepcopy(fixture("stripe/event_checkout_session_completed.constructed.json")["data"]["object"])
        session.update(
            {
                "metadata": {"checkout_id": str(checkout_id)},
                "client_reference_id": str(checkout_id),
                "currency": "gbp",
                "status": "complete",
                "subscription": None,
                "invoice": None,
            }
        )
        session.update(values)
        return session

    def _intent(self, amount: int, *, created: int, error: str | None = None) -> tuple[str, str]:
        intent_id, charge_id = unique("pi_"), unique("ch_")
        intent = copy.deepcopy(fixture("stripe/payment_intent.stripe-mock.json"))
        charge = copy.deepcopy(fixture("stripe/charge.stripe-mock.json"))
        charge.update(
            {"id": charge_id, "amount": amount, "created": created, "payment_intent": intent_id, "currency": "gbp"}
        )
        intent.update(
            {
                "id": intent_id,
                "amount": amount,
                "currency": "gbp",
                "status": "requires_payment_method" if error else "succeeded",
                "latest_charge": charge,
                "last_payment_error": {"message": error, "code": "card_declined"} if error else None,
            }
        )
        self.stripe.intents[intent_id] = intent
        return intent_id, charge_id

    def _charge(self, charge_id: str, intent_id: str, amount: int, refunded: int) -> dict[str, Any]:
        charge = copy.deepcopy(fixture("stripe/event_charge_refunded.constructed.json")["data"]["object"])
        charge.update(
            {
                "id": charge_id,
                "payment_intent": intent_id,
                "amount": amount,
                "amount_captured": amount,
                "amount_refunded": refunded,
                "refunded": refunded >= amount,
            }
        )
        return charge

    def _refund(self, charge_id: str, intent_id: str, amount: int, *, status: str = "succeeded") -> dict[str, Any]:
        refund = copy.deepcopy(fixture("stripe/refund.stripe-mock.json"))
        refund.update(
            {
                "id": unique("re_"),
                "amount": amount,
                "charge": charge_id,
                "payment_intent": intent_id,
                "status": status,
                "created": self.tick(),
                "currency": "gbp",
                "reason": "requested_by_customer",
            }
        )
        self.stripe.refunds.setdefault(charge_id, []).append(refund)
        return refund

    def _dispute(self, charge_id: str, intent_id: str, amount: int, final_status: str) -> str:
        dispute = copy.deepcopy(fixture("stripe/event_charge_dispute_created.constructed.json")["data"]["object"])
        dispute_id = unique("dp_")
        dispute.update(
            {"id": dispute_id, "charge": charge_id, "payment_intent": intent_id, "amount": amount, "currency": "gbp"}
        )
        opened = copy.deepcopy(dispute)
        opened["status"] = "needs_response"
        self._stripe("charge.dispute.created", opened)
        self._stripe("charge.dispute.funds_withdrawn", opened)
        closed = copy.deepcopy(dispute)
        closed["status"] = final_status
        self.stripe.disputes[dispute_id] = closed
        self._stripe("charge.dispute.closed", closed)
        return dispute_id

    # The stories

    def one_off_card_gift(
        self,
        supporter_id: uuid.UUID,
        amount: int,
        *,
        refunds: tuple[int, ...] = (),
        dispute: str | None = None,
        appeal: str | None = "WINTER",
        with_payment_intent_event: bool = True,
        checkout_id: uuid.UUID | None = None,
        session_id: str | None = None,
    ) -> str:
        """A one-off card gift. `checkout_id` and `session_id`: a checkout our donate form made (and its session),
        rather than a seeded one."""
        checkout_id = checkout_id or seed_checkout(self.runtime, supporter_id, amount=amount, appeal=appeal)
        charged = self.tick()
        intent_id, charge_id = self._intent(amount, created=charged)
        session_id = session_id or unique("cs_test_")
        self._stripe(
            "checkout.session.completed",
            self._session_object(
                checkout_id,
                id=session_id,
                mode="payment",
                payment_status="paid",
                payment_intent=intent_id,
                amount_total=amount,
                amount_subtotal=amount,
            ),
        )
        if with_payment_intent_event:
            intent_event = copy.deepcopy(self.stripe.intents[intent_id])
            intent_event["latest_charge"] = charge_id
            self._stripe("payment_intent.succeeded", intent_event)
        refunded = 0
        for part in refunds:
            refunded += part
            refund = self._refund(charge_id, intent_id, part)
            self._stripe("charge.refunded", self._charge(charge_id, intent_id, amount, refunded))
            self._stripe("refund.created", refund)
        lost = 0
        if dispute:
            self._dispute(charge_id, intent_id, amount - refunded, dispute)
            lost = amount - refunded if dispute == "lost" else 0
        returned = min(refunded + lost, amount)
        self.expected.gifts[session_id] = ExpectedGift("paid", amount, returned)
        self.expected.add_totals(supporter_id, donated=amount - returned)
        return session_id

    def shop_basket(
        self, supporter_id: uuid.UUID, *, quantity: int, donation: int, refunds: tuple[int, ...] = ()
    ) -> str:
        order_id, goods = seed_order(
            self.runtime, supporter_id, sku="TEE-SOLIDARITY-M", quantity=quantity, donation=donation
        )
        total = goods + donation
        checkout_id = seed_checkout(self.runtime, supporter_id, amount=total, order_id=order_id)
        intent_id, charge_id = self._intent(total, created=self.tick())
        session_id = unique("cs_test_")
        self._stripe(
            "checkout.session.completed",
            self._session_object(
                checkout_id,
                id=session_id,
                mode="payment",
                payment_status="paid",
                payment_intent=intent_id,
                amount_total=total,
                amount_subtotal=total,
                submit_type="pay",
            ),
        )
        refunded = 0
        for part in refunds:
            refunded += part
            refund = self._refund(charge_id, intent_id, part)
            self._stripe("charge.refunded", self._charge(charge_id, intent_id, total, refunded))
            self._stripe("refund.created", refund)
        # The rule: refunds come off the goods first, then the donation line.
        goods_refunded = min(refunded, goods)
        donation_refunded = min(refunded - goods_refunded, donation)
        if refunded == 0:
            status = "paid"
        elif goods_refunded == goods and donation_refunded == donation:
            status = "refunded"
        else:
            status = "partially_refunded"
        self.expected.orders[session_id] = (status, goods_refunded)
        if donation:
            self.expected.gifts[session_id] = ExpectedGift("paid", donation, donation_refunded)
        self.expected.add_totals(supporter_id, donated=donation - donation_refunded, purchases=goods - goods_refunded)
        return session_id

    def stripe_monthly(
        self,
        supporter_id: uuid.UUID,
        amount: int,
        *,
        paid: int = 2,
        fail_last: bool = False,
        final_status: str = "active",
        legacy_invoice_shape: bool = False,
        checkout_id: uuid.UUID | None = None,
        session_id: str | None = None,
    ) -> str:
        """A monthly card gift: the checkout, the subscription's events, `paid` paid invoices and optionally a
        failed one after them; `final_status` is the subscription's status at the end. `checkout_id` and
        `session_id`: a checkout our donate form made (and its session), rather than a seeded one."""
        checkout_id = checkout_id or seed_checkout(
            self.runtime, supporter_id, amount=amount, frequency=Frequency.MONTHLY
        )
        subscription_id = unique("sub_")
        subscription = copy.deepcopy(fixture("stripe/subscription.stripe-mock.json"))
        period_end = BASE_TIME + 31 * DAY * (paid + 1)
        subscription.update(
            {
                "id": subscription_id,
                "status": final_status,
                "cancellation_details": {"reason": "cancellation_requested", "comment": None, "feedback": None},
                "items": {"object": "list", "data": [{"id": unique("si_"), "current_period_end": period_end}]},
                "pause_collection": None,
            }
        )
        self.stripe.subscriptions[subscription_id] = subscription
        session_id = session_id or unique("cs_test_")
        self._stripe(
            "checkout.session.completed",
            self._session_object(
                checkout_id,
                id=session_id,
                mode="subscription",
                payment_status="paid",
                payment_intent=None,
                subscription=subscription_id,
                amount_total=amount,
            ),
        )
        snapshot = {**subscription, "status": "active"}
        self._stripe("customer.subscription.created", snapshot)
        template = fixture("stripe/event_invoice_paid.constructed.json")["data"]["object"]
        invoices = []
        for month in range(paid + int(fail_last)):
            failing = fail_last and month == paid
            due = BASE_TIME + 31 * DAY * month
            invoice = copy.deepcopy(template)
            invoice_id = unique("in_")
            intent_id, _ = self._intent(
                amount, created=due, error="Your card has insufficient funds." if failing else None
            )
            invoice.update(
                {
                    "id": invoice_id,
                    "amount_paid": 0 if failing else amount,
                    "amount_due": amount,
                    "status": "open" if failing else "paid",
                    "currency": "gbp",
                    "created": due,
                    "period_start": due,
                    "attempt_count": 1,
                    "billing_reason": "subscription_create" if month == 0 else "subscription_cycle",
                    "status_transitions": {"paid_at": None if failing else due + 5, "finalized_at": due},
                    "payments": None,
                }
            )
            # Each line bills the month the instalment pays for (the instalment's date; `period_start` on a real
            # renewal invoice looks back a month).
            for line in invoice["lines"]["data"]:
                line["period"] = {"start": due, "end": due + 31 * DAY}
            invoice["parent"]["subscription_details"]["subscription"] = subscription_id
            if legacy_invoice_shape and month % 2 == 1:
                # The older payload: no `parent`, a top-level `subscription`.
                invoice["parent"] = None
                invoice["subscription"] = subscription_id
            self.stripe.invoice_payments[invoice_id] = [
                {
                    "object": "invoice_payment",
                    "status": "open" if failing else "paid",
                    "payment": {"type": "payment_intent", "payment_intent": intent_id},
                }
            ]
            self._stripe("invoice.payment_failed" if failing else "invoice.paid", invoice, created=due + 10)
            invoices.append(invoice_id)
            self.expected.gifts[invoice_id] = ExpectedGift("failed" if failing else "paid", amount)
        if final_status != "active":
            self._stripe(
                "customer.subscription.deleted" if final_status == "canceled" else "customer.subscription.updated",
                {**subscription},
            )
        status = {"canceled": "cancelled", "paused": "paused"}.get(
            final_status, "in_arrears" if fail_last else "active"
        )
        self.expected.regular[subscription_id] = status
        self.expected.add_totals(supporter_id, donated=amount * paid, regular=int(status in ("active", "in_arrears")))
        return subscription_id

    def gocardless_one_off(
        self,
        supporter_id: uuid.UUID,
        amount: int,
        *,
        final_status: str = "paid_out",
        mandate_status: str = "active",
        appeal: str | None = None,
    ) -> tuple[uuid.UUID, str, str]:
        """A one-off Direct Debit gift as GoCardless has it at the end: its billing request fulfilled (that event is
        added), its mandate, and its one payment (created with the checkout's idempotency key) in `final_status`; the
        payment's own events are the test's to add. Returns (checkout id, mandate id, payment id)."""
        runtime = self.runtime
        checkout_id = seed_checkout(
            runtime, supporter_id, amount=amount, frequency=Frequency.ONCE, method=Method.DIRECT_DEBIT, appeal=appeal
        )
        request_id, mandate_id, customer_id, payment_id = unique("BRQ"), unique("MD"), unique("CU"), unique("PM")
        links = {"mandate_request_mandate": mandate_id, "customer": customer_id}
        self.gocardless.billing_requests[request_id] = {
            "id": request_id,
            "status": "fulfilled",
            "links": links,
            "metadata": {"checkout_id": str(checkout_id)},
        }
        with runtime.unit_of_work() as uow:
            checkout = uow.session.get(Checkout, checkout_id)
            assert checkout is not None
            checkout.gocardless_billing_request_id = request_id
            uow.session.add(checkout)
        payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
        payment.update(
            {
                "id": payment_id,
                "amount": amount,
                "currency": "GBP",
                "status": final_status,
                "charge_date": "2026-01-08",
                "links": {"mandate": mandate_id},
            }
        )
        self.gocardless.payments[payment_id] = payment
        self.gocardless.created_payments[f"{checkout_id}:payment"] = payment
        mandate = copy.deepcopy(fixture("gocardless/mandates.gocardless-pro-python.json")["get"]["body"]["mandates"])
        mandate.update({"id": mandate_id, "status": mandate_status, "links": {"customer": customer_id}})
        self.gocardless.mandates[mandate_id] = mandate
        self._gocardless("billing_requests", "fulfilled", {"billing_request": request_id, **links})
        return checkout_id, mandate_id, payment_id

    def gocardless_monthly(
        self,
        supporter_id: uuid.UUID,
        amount: int,
        *,
        payments: tuple[str, ...] = ("paid_out", "paid_out"),
        mandate_cancelled: bool = False,
        subscription_request: bool = False,
    ) -> str:
        """A monthly Direct Debit gift: the billing request, then one payment per entry of `payments`, each ending
        as `paid_out`, `failed` (before it was paid), `charged_back`, `late_failure` or `chargeback_cancelled`.

        The billing request sets up the mandate only and our code creates the subscription (POST /subscriptions,
        answered by its idempotency key), as for every checkout now: GoCardless refuses a `subscription_request` on
        Bacs. `subscription_request=True` is a billing request that linked its own subscription
        (`subscription_request_subscription`), as one made by an older checkout may still arrive."""
        checkout_id = seed_checkout(
            self.runtime, supporter_id, amount=amount, frequency=Frequency.MONTHLY, method=Method.DIRECT_DEBIT
        )
        request_id, mandate_id, customer_id = unique("BRQ"), unique("MD"), unique("CU")
        subscription_id = unique("SB")
        links = {"mandate_request_mandate": mandate_id, "customer": customer_id}
        if subscription_request:
            links["subscription_request_subscription"] = subscription_id
        self.gocardless.billing_requests[request_id] = {
            "id": request_id,
            "status": "fulfilled",
            "links": links,
            "metadata": {"checkout_id": str(checkout_id)},
        }
        with self.runtime.unit_of_work() as uow:
            checkout = uow.session.get(Checkout, checkout_id)
            assert checkout is not None
            checkout.gocardless_billing_request_id = request_id
            uow.session.add(checkout)
        first_day = dt.date(2026, 1, 5)
        subscription = copy.deepcopy(
            fixture("gocardless/subscriptions.gocardless-pro-python.json")["get"]["body"]["subscriptions"]
        )
        subscription.update(
            {
                "id": subscription_id,
                "amount": amount,
                "currency": "GBP",
                "status": "cancelled" if mandate_cancelled else "active",
                "links": {"mandate": mandate_id},
                "upcoming_payments": [
                    {"amount": amount, "charge_date": (first_day + dt.timedelta(days=31 * len(payments))).isoformat()}
                ],
            }
        )
        self.gocardless.subscriptions[subscription_id] = subscription
        if not subscription_request:
            self.gocardless.created_subscriptions[f"{checkout_id}:subscription"] = subscription
        mandate = copy.deepcopy(fixture("gocardless/mandates.gocardless-pro-python.json")["get"]["body"]["mandates"])
        mandate.update({"id": mandate_id, "status": "cancelled" if mandate_cancelled else "active"})
        mandate["links"] = {"customer": customer_id}
        self.gocardless.mandates[mandate_id] = mandate
        self._gocardless("billing_requests", "fulfilled", {"billing_request": request_id, **links})
        self._gocardless("subscriptions", "created", {"subscription": subscription_id, "mandate": mandate_id})
        donated = 0
        last_outcome = None
        for month, outcome in enumerate(payments):
            payment_id = unique("PM")
            charge_day = first_day + dt.timedelta(days=31 * month)
            final = {
                "paid_out": "paid_out",
                "failed": "failed",
                "charged_back": "charged_back",
                "late_failure": "failed",
                "chargeback_cancelled": "paid_out",
            }[outcome]
            payment = copy.deepcopy(
                fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"]
            )
            payment.update(
                {
                    "id": payment_id,
                    "amount": amount,
                    "currency": "GBP",
                    "status": final,
                    "charge_date": charge_day.isoformat(),
                    "links": {"mandate": mandate_id, "subscription": subscription_id},
                }
            )
            self.gocardless.payments[payment_id] = payment
            pay_links = {"payment": payment_id, "subscription": subscription_id, "mandate": mandate_id}
            self._gocardless("subscriptions", "payment_created", pay_links)
            self._gocardless("payments", "created", {"payment": payment_id})
            if outcome == "failed":
                self._gocardless(
                    "payments",
                    "failed",
                    {"payment": payment_id},
                    origin="bank",
                    cause="insufficient_funds",
                    reason_code="ARUDD-0",
                    description="The customer's account had insufficient funds.",
                    will_attempt_retry=False,
                )
                status = "failed"
            else:
                self._gocardless("payments", "confirmed", {"payment": payment_id})
                payout_id = unique("PO")
                self._gocardless("payments", "paid_out", {"payment": payment_id, "payout": payout_id})
                # As GoCardless's payment object: once paid out it names its payout, after a late failure too.
                payment["links"]["payout"] = payout_id
                status = "paid"
                if outcome in ("charged_back", "chargeback_cancelled"):
                    self._gocardless(
                        "payments",
                        "charged_back",
                        {"payment": payment_id},
                        origin="bank",
                        cause="authorisation_disputed",
                        reason_code="DDICA-5",
                    )
                    status = "reversed"
                if outcome == "chargeback_cancelled":
                    self._gocardless("payments", "chargeback_cancelled", {"payment": payment_id})
                    status = "paid"
                if outcome == "late_failure":
                    self._gocardless(
                        "payments",
                        "failed",
                        {"payment": payment_id},
                        origin="bank",
                        cause="insufficient_funds",
                        reason_code="ARUDD-0",
                        will_attempt_retry=False,
                    )
                    self._gocardless(
                        "payments", "late_failure_settled", {"payment": payment_id, "payout": unique("PO")}
                    )
                    status = "reversed"
            if status == "paid":
                donated += amount
            self.expected.gifts[payment_id] = ExpectedGift(status, amount)
            last_outcome = status
        if mandate_cancelled:
            self._gocardless(
                "mandates",
                "cancelled",
                {"mandate": mandate_id},
                origin="bank",
                cause="bank_account_closed",
                reason_code="ADDACS-B",
                description="The customer closed their bank account.",
            )
            status = "cancelled"
        else:
            status = "in_arrears" if last_outcome in ("failed", "reversed") else "active"
        self.expected.regular[subscription_id] = status
        self.expected.add_totals(supporter_id, donated=donated, regular=int(status in ("active", "in_arrears")))
        return subscription_id


def standard_scenario(runtime: Runtime) -> Scenario:
    """Every flow at once: the scenario the property test shuffles."""
    scenario = Scenario(runtime)
    alice = seed_supporter(runtime, "Alice")
    bob = seed_supporter(runtime, "Bob")
    carol = seed_supporter(runtime, "Carol")
    scenario.one_off_card_gift(alice, 2500, refunds=(500,))
    scenario.one_off_card_gift(alice, 1000, dispute="lost", with_payment_intent_event=False)
    scenario.shop_basket(bob, quantity=2, donation=1000, refunds=(1500, 1000))
    scenario.stripe_monthly(bob, 1500, paid=2, fail_last=True, legacy_invoice_shape=True)
    scenario.stripe_monthly(carol, 800, paid=1, final_status="canceled")
    # Carol's billing request is an older checkout's, which linked its subscription; Alice's is today's.
    scenario.gocardless_monthly(
        carol, 1200, payments=("paid_out", "late_failure", "chargeback_cancelled"), subscription_request=True
    )
    scenario.gocardless_monthly(alice, 700, payments=("paid_out", "failed"), mandate_cancelled=True)
    return scenario
