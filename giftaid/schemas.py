"""JSON shapes of the giftaid API: request bodies (pydantic, strict about unknown fields) and responses."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.clock import isoformat_z
from core.money import Money
from giftaid.errors import InvalidClaimRequest
from giftaid.models import Message

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ClaimIn(Body):
    through: dt.date


class SubmitIn(Body):
    # Send a claim whose earlier submission got no answer, once finance has checked the gateway's list.
    again: bool = False


class AttachIn(Body):
    # The correlation id of a submission that got no answer, as `giving giftaid gateway-list` shows it.
    correlation_id: str = Field(max_length=100)


class StatusIn(Body):
    status: Literal["submitted", "accepted", "rejected", "paid"]
    reason: str = Field(default="", max_length=500)
    # HMRC's payment, for `paid`: money `{"amount": pence, "currency": "GBP"}` or pence.
    amount: dict[str, Any] | int | None = None
    paid_on: dt.date | None = None

    @field_validator("amount")
    @classmethod
    def _money(cls, value: dict[str, Any] | int | None) -> dict[str, Any] | int | None:
        if isinstance(value, dict):
            if set(value) - {"amount", "currency"} or not isinstance(value.get("amount"), int):
                raise ValueError('money is {"amount": <pence>, "currency": "GBP"}')
            if value.get("currency", "GBP") != "GBP":
                raise ValueError("HMRC pays in GBP")
        return value

    def paid_amount(self) -> int | None:
        if self.amount is None:
            return None
        return int(self.amount["amount"]) if isinstance(self.amount, dict) else int(self.amount)


def parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise InvalidClaimRequest(problems) from exc


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "at": isoformat_z(message.at),
        "direction": message.direction,
        "function": message.function,
        "qualifier": message.qualifier,
        "correlation_id": message.correlation_id,
        "part": message.part,
        "body": message.body,
        "error": message.error,
    }


def pounds(pence: int) -> str:
    return str(Decimal(pence).scaleb(-2))


def money(pence: int) -> dict[str, Any]:
    return Money(pence).to_json()
