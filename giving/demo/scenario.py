"""The demo's donors, what happens to their money at the providers, and the ledger that must result.

Eight donors fill in the real donate and shop forms. Then the demo plays the providers: it completes each hosted
page, takes the money over the following weeks (a monthly card gift with a failed then successful instalment, a
monthly Direct Debit with a chargeback, a partial refund, a lost card dispute), pays it out to the bank, and writes
the webhook events Stripe and GoCardless would send. Every expectation is worked out here from the plan alone, never
by reading what the application recorded.

Times are relative to the moment the demo runs: the story is the last ten weeks, so every gift falls before today and
is claimable now.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.clock import uk_date
from core.money import Money, gift_aid_on
from giving.demo.world import GoCardlessWorld, Json, StripeWorld, gocardless_moment

DISPUTE_FEE = 2000  # Stripe UK's fee for a card dispute
# The history items whose number the story decides and the demo checks. Not `receipt`: how many depends on the order
# the workers ran in.
TRACKED_HISTORY = (
    "gift",
    "declaration",
    "consent",
    "refund",
    "dispute",
    "regular_gift_started",
    "purchase",
    "payment_failed",
)


@dataclass(frozen=True)
class Donor:
    title: str
    first_name: str
    last_name: str
    email: str
    address_line1: str
    town: str
    postcode: str
    country: str = "GB"

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    def fields(self) -> dict[str, str]:
        return {
            "title": self.title,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "address_line1": self.address_line1,
            "address_line2": "",
            "town": self.town,
            "postcode": self.postcode,
            "country": self.country,
        }


AMINA = Donor("Ms", "Amina", "Okafor", "amina.okafor@example.org", "14 Harbour Street", "Dover", "CT17 9BU")
TOM = Donor("Mr", "Tom", "Baker", "tom.baker@example.org", "3 Castle Hill", "Folkestone", "CT20 1AA")
PRIYA = Donor("Dr", "Priya", "Shah", "priya.shah@example.org", "27 Mill Lane", "Canterbury", "CT1 2AB")
GARETH = Donor("", "Gareth", "Jones", "gareth.jones@example.org", "Ty Gwyn, Heol y Bont", "Cardiff", "CF10 1AA")
SAM = Donor("", "Sam", "Lee", "sam.lee@example.org", "", "", "")
# A GB address with a Jersey postcode: the forms make it Jersey, non-UK for HMRC (postcode X, "Overseas").
MARIE = Donor("Mme", "Marie", "Le Brun", "marie.lebrun@example.org", "5 Rue des Pres", "St Helier", "JE2 4UH")
CHRIS = Donor("Mr", "Chris", "Ward", "chris.ward@example.org", "88 London Road", "Deal", "CT14 9TT")
LEILA = Donor("Ms", "Leila", "Haddad", "leila.haddad@example.org", "2 Station Approach", "Ramsgate", "CT11 7RJ")
DONORS = (AMINA, TOM, PRIYA, GARETH, SAM, MARIE, CHRIS, LEILA)

# The shirts Leila buys (sizes looked up on the real shop page), and their prices in the default catalogue.
SHOP_BASKET = (("TEE-SOLIDARITY", "M", 2), ("TEE-LMHR", "L", 1))
SHOP_DONATION = 1000


@dataclass(frozen=True)
class Form:
    """One form a donor sends: `/donate` or `/shop/checkout`."""

    story: str
    donor: Donor
    path: str
    values: dict[str, str]
    amount: int  # pence: the gift, or the basket's donation line
    frequency: str = "once"
    method: str = "card"
    gift_aid: bool = True
    appeal: str = ""
    email_updates: bool = False


def donate_form(
    story: str,
    donor: Donor,
    amount: int,
    *,
    frequency: str = "once",
    method: str = "card",
    gift_aid: bool = True,
    appeal: str = "",
    email_updates: bool = False,
) -> Form:
    values = {
        "amount": f"{amount // 100}" if amount % 100 == 0 else Money(amount).plain(),
        "frequency": frequency,
        "method": method,
        **donor.fields(),
        "appeal": appeal,
    }
    if gift_aid:
        values["gift_aid"] = "yes"
    if email_updates:
        values["email_updates"] = "yes"
    return Form(story, donor, "/donate", values, amount, frequency, method, gift_aid, appeal, email_updates)


FORMS = (
    donate_form("card_once", AMINA, 2500, appeal="WINTER", email_updates=True),
    donate_form("card_monthly", TOM, 1000, frequency="monthly"),
    donate_form("dd_once", PRIYA, 5250, method="direct_debit", appeal="WINTER"),
    donate_form("dd_monthly", GARETH, 1500, frequency="monthly", method="direct_debit"),
    donate_form("card_no_gift_aid", SAM, 4000, gift_aid=False),
    donate_form("card_jersey", MARIE, 3000, appeal="WINTER"),
    donate_form("card_disputed", CHRIS, 2000),
    Form("shop", LEILA, "/shop/checkout", {**LEILA.fields(), "gift_aid": "yes"}, SHOP_DONATION),
)


# --- what must result ---------------------------------------------------------------------------------------------


@dataclass
class ExpectedGift:
    key: str  # the provider id the gift is keyed on: Checkout Session, invoice or Direct Debit payment
    donor: Donor
    amount: int
    status: str  # paid | reversed
    method: str
    received_on: dt.date  # the UK date the provider says the money arrived
    returned: int = 0
    held_back: str | None = None  # the reason code the claim gives, or None when the claim takes it
    story: str = ""
    appeal: str = ""

    @property
    def claimed(self) -> int:
        return 0 if self.held_back else self.amount - self.returned


@dataclass
class ExpectedPayout:
    provider: str
    provider_payout_id: str
    amount: int


@dataclass
class Expected:
    gifts: list[ExpectedGift] = field(default_factory=list)
    payouts: list[ExpectedPayout] = field(default_factory=list)
    orders: int = 0
    regular_gifts: dict[str, int] = field(default_factory=dict)  # donor email → running regular gifts
    # donor email → how many history items of each type in TRACKED_HISTORY their story leaves
    history: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def donated(self, donor: Donor) -> int:
        return sum(g.amount - g.returned for g in self.gifts if g.donor == donor and g.status == "paid")

    def gift_aid_claimed(self, donor: Donor) -> int:
        return sum(gift_aid_on(g.claimed) for g in self.gifts if g.donor == donor)

    @property
    def claim_total(self) -> int:
        return sum(g.claimed for g in self.gifts)

    @property
    def claim_gift_aid(self) -> int:
        return gift_aid_on(self.claim_total)

    @property
    def held_back(self) -> dict[str, str]:
        return {g.key: g.held_back for g in self.gifts if g.held_back}


# --- deliveries -----------------------------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One POST the provider makes: a Stripe event, or a GoCardless batch of events."""

    provider: str  # stripe | gocardless
    events: list[Json]
    forged: bool = False  # signed with the wrong secret: must be refused

    @property
    def event_ids(self) -> list[str]:
        return [str(event["id"]) for event in self.events]

    def body(self) -> Json:
        if self.provider == "stripe":
            return self.events[0]
        return {"events": self.events, "meta": {"webhook_id": f"WB{self.events[0]['id']}"}}


def shuffled_with_duplicates(deliveries: list[Delivery], rng: random.Random, *, share: float = 0.3) -> list[Delivery]:
    """The providers' real behaviour: any order, and some deliveries more than once (a timeout, a retry)."""
    order = list(deliveries)
    rng.shuffle(order)
    for delivery in rng.sample(deliveries, k=max(1, int(len(deliveries) * share))):
        order.insert(rng.randrange(len(order) + 1), delivery)
    return order


def gocardless_batches(events: list[Json], rng: random.Random) -> list[Delivery]:
    """GoCardless sends events in batches of a few; a batch can mix resources."""
    batches, start = [], 0
    while start < len(events):
        size = rng.randint(1, 4)
        batches.append(Delivery("gocardless", events[start : start + size]))
        start += size
    return batches


# --- the play -------------------------------------------------------------------------------------------------------


@dataclass
class Opened:
    """What the provider's page was, for one form: the Checkout Session or the Billing Request."""

    form: Form
    provider_id: str
    checkout_id: str


class Play:
    """The providers' side of the story, step by step, with the expected ledger."""

    def __init__(self, stripe: StripeWorld, gocardless: GoCardlessWorld, *, now: dt.datetime, seed: int):
        self.stripe = stripe
        self.gocardless = gocardless
        self.now = now
        self.rng = random.Random(seed)
        self.expected = Expected()
        self.stripe_events: list[Json] = []
        self.gocardless_events: list[Json] = []
        self.opened: dict[str, Opened] = {}
        # Direct Debit payments waiting for their payout: (payout items, the day paid out, payment id).
        self.pending_payouts: list[tuple[list[Json], dt.date, str]] = []
        self.charged_back = ""

    def days_ago(self, days: float, hour: int = 10) -> dt.datetime:
        moment = self.now - dt.timedelta(days=days)
        return moment.replace(hour=hour, minute=self.rng.randrange(60), second=0, microsecond=0)

    def day(self, days: int) -> dt.date:
        return uk_date(self.now) - dt.timedelta(days=days)

    def _stripe(self, event_type: str, obj: Json, at: dt.datetime) -> None:
        self.stripe_events.append(self.stripe.event(event_type, obj, at))

    def _gocardless(self, resource: str, action: str, links: dict[str, str], at: dt.datetime, **details: Any) -> None:
        self.gocardless_events.append(self.gocardless.event(resource, action, links, at, **details))

    def _gift(self, opened: Opened, key: str, amount: int, **values: Any) -> ExpectedGift:
        form = opened.form
        held_back = values.pop("held_back", None)
        if held_back is None and not form.gift_aid:
            held_back = "no_declaration"
        gift = ExpectedGift(
            key,
            form.donor,
            amount,
            method=form.method,
            held_back=held_back,
            story=form.story,
            appeal=form.appeal,
            **values,
        )
        self.expected.gifts.append(gift)
        self._history(form.donor, "gift")  # one per payment that succeeded, even if it was taken back later
        return gift

    def _history(self, donor: Donor, item: str, count: int = 1) -> None:
        self.expected.history[donor.email][item] += count

    # --- phase 1: the donors pay; the money moves for ten weeks ------------------------------------------------

    def first_phase(self) -> list[Delivery]:
        for opened in self.opened.values():  # what the forms themselves recorded
            self._history(opened.form.donor, "declaration", int(opened.form.gift_aid))
            self._history(opened.form.donor, "consent", int(opened.form.email_updates))
        self._card_once(self.opened["card_once"], paid=45, refund=(500, 40))
        self._card_monthly(self.opened["card_monthly"])
        self._dd_once_mandate(self.opened["dd_once"])
        self._dd_monthly(self.opened["dd_monthly"])
        self._card_once(self.opened["card_no_gift_aid"], paid=38)
        self._card_once(self.opened["card_jersey"], paid=20)
        self._card_once(self.opened["card_disputed"], paid=35, dispute=(25, 10))
        self._shop(self.opened["shop"], paid=15)
        stripe = [Delivery("stripe", [event]) for event in self.stripe_events]
        deliveries = stripe + gocardless_batches(self.gocardless_events, self.rng)
        self.stripe_events, self.gocardless_events = [], []
        return shuffled_with_duplicates(deliveries, self.rng) + self._forged()

    def _session_snapshot(self, session_id: str) -> Json:
        return copy.deepcopy(self.stripe.session(session_id))

    def _card_once(
        self,
        opened: Opened,
        *,
        paid: int,
        refund: tuple[int, int] | None = None,
        dispute: tuple[int, int] | None = None,
    ) -> None:
        at = self.days_ago(paid)
        intent, charge = self.stripe.complete_payment_session(opened.provider_id, at)
        self._stripe("checkout.session.completed", self._session_snapshot(opened.provider_id), at)
        self._stripe("payment_intent.succeeded", intent, at)
        self._stripe("charge.succeeded", charge, at)  # stored, and ignored: the session is what we act on
        gift = self._gift(
            opened,
            opened.provider_id,
            opened.form.amount,
            status="paid",
            received_on=uk_date(at),
        )
        if refund:
            amount, days = refund
            made = self.stripe.refund(charge["id"], amount, self.days_ago(days))
            self._stripe("charge.refunded", self.stripe.charges[charge["id"]], self.days_ago(days))
            self._stripe("refund.created", made, self.days_ago(days))
            gift.returned += amount
            self._history(opened.form.donor, "refund")
        if dispute:
            opened_days, closed_days = dispute
            made = self.stripe.dispute(charge["id"], opened=self.days_ago(opened_days), status="lost", fee=DISPUTE_FEE)
            snapshot = {**made, "status": "needs_response"}
            self._stripe("charge.dispute.created", snapshot, self.days_ago(opened_days))
            self._stripe("charge.dispute.funds_withdrawn", snapshot, self.days_ago(opened_days))
            self._stripe("charge.dispute.closed", made, self.days_ago(closed_days))
            gift.returned = gift.amount
            gift.held_back = "refunded"
            self._history(opened.form.donor, "dispute", 2)  # opened, then lost

    def _card_monthly(self, opened: Opened) -> None:
        """Month one paid; month two declined, then paid when Stripe retried three days later."""
        amount = opened.form.amount
        started = self.days_ago(61)
        subscription = self.stripe.start_subscription(
            opened.provider_id, started, next_period_end=self.now + dt.timedelta(days=1, hours=6)
        )
        self._stripe("checkout.session.completed", self._session_snapshot(opened.provider_id), started)
        self._stripe("customer.subscription.created", subscription, started)
        first = self.stripe.invoice(subscription["id"], amount, started, attempts=[(started, None)], first=True)
        self._stripe("invoice.paid", first, started)
        self._stripe("invoice.payment_succeeded", first, started)
        self._gift(opened, first["id"], amount, status="paid", received_on=uk_date(started))
        due, retried = self.days_ago(30), self.days_ago(27)
        second = self.stripe.invoice(
            subscription["id"], amount, due, attempts=[(due, "Your card was declined."), (retried, None)], first=False
        )
        declined = copy.deepcopy(second)
        declined.update({"status": "open", "amount_paid": 0, "amount_remaining": amount, "attempt_count": 1})
        declined["status_transitions"]["paid_at"] = None
        self._stripe("invoice.payment_failed", declined, due)
        self._stripe("invoice.paid", second, retried)
        self._gift(opened, second["id"], amount, status="paid", received_on=uk_date(retried))
        self._history(opened.form.donor, "payment_failed")
        self._history(opened.form.donor, "regular_gift_started")
        self.expected.regular_gifts[opened.form.donor.email] = 1

    def _fulfil(self, opened: Opened, days: int, first_charge: dt.date) -> Json:
        at = self.days_ago(days)
        request = self.gocardless.fulfil(opened.provider_id, at, first_charge=first_charge)
        links = request["links"]
        mandate = links["mandate_request_mandate"]
        self._gocardless(
            "billing_requests", "fulfilled", {"billing_request": opened.provider_id, **links}, at, origin="api"
        )
        self._gocardless("mandates", "created", {"mandate": mandate}, at, origin="api")
        self._gocardless("mandates", "submitted", {"mandate": mandate}, at + dt.timedelta(hours=2))
        self._gocardless("mandates", "active", {"mandate": mandate}, at + dt.timedelta(days=1))
        return request

    def _dd_once_mandate(self, opened: Opened) -> None:
        """The mandate now; the payment is created by our code once it learns of the mandate (phase 2)."""
        self.gocardless.charge_dates[opened.checkout_id] = self.day(8)
        self._fulfil(opened, 12, self.day(8))

    def _dd_monthly(self, opened: Opened) -> None:
        """The mandate 70 days ago; the subscription is created by our code once it learns of the mandate
        (GoCardless takes no subscription request on Bacs), so its payments come in phase 2 (`_dd_monthly_payments`).
        """
        self._fulfil(opened, 70, self.day(65))

    def _created_by_us(self, store: dict[str, Json], opened: Opened, what: str) -> Json:
        """The one object our code created at GoCardless for this checkout (found by the metadata it gave)."""
        created = [
            found for found in store.values() if found.get("metadata", {}).get("checkout_id") == opened.checkout_id
        ]
        if len(created) != 1:
            raise DemoFailure(
                f"our code should have created one Direct Debit {what} for checkout {opened.checkout_id} once the "
                f"mandate was set up; GoCardless has {len(created)}"
            )
        return created[0]

    def _dd_monthly_payments(self, opened: Opened) -> None:
        """Three monthly payments; the bank takes the second back (the donor disputed it) weeks later."""
        amount = opened.form.amount
        made = self._created_by_us(self.gocardless.subscriptions, opened, "subscription")
        subscription, mandate = made["id"], made["links"]["mandate"]
        made["upcoming_payments"] = [{"charge_date": self.day(-26).isoformat(), "amount": amount}]
        self._gocardless(
            "subscriptions",
            "created",
            {"subscription": subscription, "mandate": mandate},
            gocardless_moment(made["created_at"]),  # a minute after the mandate, 70 days ago
            origin="api",
        )
        for days, outcome in ((65, "paid_out"), (34, "charged_back"), (4, "paid_out")):
            charge_day = self.day(days)
            # Five days before its charge date; on the first one's day, after the subscription (created by 11:00).
            created = self.days_ago(days + 5, hour=12)
            payment = self.gocardless.payment(
                mandate, amount, charge_day, metadata={}, subscription_id=subscription, created=created
            )
            payment_id = payment["id"]
            self._gocardless(
                "subscriptions",
                "payment_created",
                {"subscription": subscription, "payment": payment_id, "mandate": mandate},
                created,
            )
            self._gocardless("payments", "created", {"payment": payment_id}, created)
            self._gocardless("payments", "submitted", {"payment": payment_id}, self.days_ago(days + 2))
            self._gocardless("payments", "confirmed", {"payment": payment_id}, self.days_ago(days))
            paid_items = paid_out_items(payment_id, amount)
            self.gocardless.set_status(self.gocardless.payments, payment_id, outcome)
            self.pending_payouts.append((paid_items, self.day(days - 2), payment_id))
            status = "paid"
            if outcome == "charged_back":
                self.charged_back = payment_id
                status = "reversed"
            self._gift(opened, payment_id, amount, status=status, received_on=charge_day)
            if outcome == "charged_back":
                # A reversed gift keeps its amount and counts as nothing given (nor claimable: all of it went back).
                self.expected.gifts[-1].held_back = "refunded"
                self._history(opened.form.donor, "dispute")  # the chargeback
        self._history(opened.form.donor, "regular_gift_started")
        self.expected.regular_gifts[opened.form.donor.email] = 1

    def _shop(self, opened: Opened, *, paid: int) -> None:
        at = self.days_ago(paid)
        intent, _ = self.stripe.complete_payment_session(opened.provider_id, at)
        self._stripe("checkout.session.completed", self._session_snapshot(opened.provider_id), at)
        self._stripe("payment_intent.succeeded", intent, at)
        self._gift(
            opened,
            opened.provider_id,
            SHOP_DONATION,
            status="paid",
            received_on=uk_date(at),
        )
        self.expected.orders += 1
        self._history(opened.form.donor, "purchase")

    def _forged(self) -> list[Delivery]:
        """One delivery per provider that did not come from them: refused, and nothing stored."""
        fake_stripe = {
            "id": "evt_forged_demo",
            "object": "event",
            "type": "checkout.session.completed",
            "created": int(self.now.timestamp()),
            "livemode": False,
            "data": {"object": {"id": "cs_forged", "object": "checkout.session"}},
        }
        fake_gocardless = {
            "id": "EVFORGEDDEMO",
            "created_at": "2026-01-01T00:00:00.000Z",
            "resource_type": "payments",
            "action": "confirmed",
            "links": {"payment": "PMFORGED"},
            "details": {"origin": "gocardless", "cause": "payment_confirmed"},
        }
        return [Delivery("stripe", [fake_stripe], forged=True), Delivery("gocardless", [fake_gocardless], forged=True)]

    # --- phase 2: the Direct Debits our code set up (the one-off payment, the subscription) are collected --------

    def second_phase(self) -> list[Delivery]:
        opened = self.opened["dd_once"]
        payment = self._created_by_us(self.gocardless.payments, opened, "payment")
        payment_id, amount = payment["id"], int(payment["amount"])
        created = gocardless_moment(payment["created_at"])  # our code created it on learning of the mandate
        self._gocardless("payments", "created", {"payment": payment_id}, created, origin="api")
        self._gocardless("payments", "submitted", {"payment": payment_id}, self.days_ago(10))
        self._gocardless("payments", "confirmed", {"payment": payment_id}, self.days_ago(8))
        self.gocardless.set_status(self.gocardless.payments, payment_id, "paid_out")
        self._gift(opened, payment_id, amount, status="paid", received_on=self.day(8))
        self.pending_payouts.append((paid_out_items(payment_id, amount), self.day(6), payment_id))
        self._dd_monthly_payments(self.opened["dd_monthly"])
        deliveries = gocardless_batches(self.gocardless_events, self.rng)
        self.gocardless_events = []
        return shuffled_with_duplicates(deliveries, self.rng)

    # --- phase 3: everything is paid out (and the bank takes back the disputed monthly payment) -----------------

    def third_phase(self) -> list[Delivery]:
        """After the collections, so the charged-back payment was confirmed (and receipted) before it went back."""
        self._gocardless_payouts()
        self._stripe_payouts()
        stripe = [Delivery("stripe", [event]) for event in self.stripe_events]
        deliveries = stripe + gocardless_batches(self.gocardless_events, self.rng)
        return shuffled_with_duplicates(deliveries, self.rng)

    def _gocardless_payouts(self) -> None:
        """Payouts on the working day after each payment; the chargeback is debited from the last one."""
        by_day: dict[dt.date, list[tuple[list[Json], str]]] = {}
        for items, paid_on, payment_id in self.pending_payouts:
            by_day.setdefault(paid_on, []).append((items, payment_id))
        days = sorted(by_day)
        # The chargeback is debited from the first payout after the bank took the money back.
        debited_on = min(day for day in days if day >= self.day(10))
        for paid_on in days:
            items = [item for found, _ in by_day[paid_on] for item in found]
            if paid_on == debited_on:
                amount = int(self.gocardless.payments[self.charged_back]["amount"])
                items.append(
                    {
                        "type": "payment_charged_back",
                        "amount": f"-{amount}.0",
                        "taxes": [],
                        "links": {"payment": self.charged_back},
                    }
                )
            payout = self.gocardless.pay_out(items, paid_on + dt.timedelta(days=1))
            paid_at = dt.datetime.combine(paid_on, dt.time(7), dt.UTC)
            for _, payment_id in by_day[paid_on]:
                self._gocardless("payments", "paid_out", {"payment": payment_id, "payout": payout["id"]}, paid_at)
            if paid_on == debited_on:
                self._gocardless(
                    "payments",
                    "charged_back",
                    {"payment": self.charged_back},
                    self.days_ago(10),
                    origin="bank",
                    cause="authorisation_disputed",
                    reason_code="DDICA-5",
                    description="The customer disputed having authorised you to take this payment.",
                )
            self._gocardless("payouts", "paid", {"payout": payout["id"]}, paid_at + dt.timedelta(days=1))
            self.expected.payouts.append(ExpectedPayout("gocardless", payout["id"], int(payout["amount"])))

    def _stripe_payouts(self) -> None:
        """Two payouts: everything settled until four weeks ago, then the rest until five days ago."""
        cut_offs = ((self.days_ago(29, hour=23), self.days_ago(27)), (self.days_ago(5, hour=23), self.days_ago(3)))
        for up_to, arrival in cut_offs:
            payout = self.stripe.pay_out(up_to, arrival)
            self._stripe("payout.paid", payout, arrival)
            self._stripe("payout.reconciliation_completed", payout, arrival)
            self.expected.payouts.append(ExpectedPayout("stripe", payout["id"], int(payout["amount"])))


class DemoFailure(Exception):
    """Something the demo needed did not happen; the message says what."""


def paid_out_items(payment_id: str, amount: int) -> list[Json]:
    """A Direct Debit payment in a payout: the amount collected, and GoCardless's fee on it."""
    return [
        {"type": "payment_paid_out", "amount": f"{amount}.0", "taxes": [], "links": {"payment": payment_id}},
        {
            "type": "gocardless_fee",
            "amount": f"-{gocardless_fee_text(amount)}",
            "taxes": [],
            "links": {"payment": payment_id},
        },
    ]


def gocardless_fee_text(amount: int) -> str:
    """GoCardless's fee (1% + 20p, at most £4) as the exact pence a payout item shows, e.g. "72.5"."""
    fee = min(Decimal(amount) / 100 + 20, Decimal(400))
    return format(fee.normalize(), "f") if fee != fee.to_integral_value() else f"{int(fee)}.0"
