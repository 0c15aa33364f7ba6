"""A gift whose benefit fails the relevant value test can never be Gift Aided, whatever declaration is made: its
reason is the benefit, not the missing or unconfirmed declaration, so the receipt neither invites a declaration
nor promises a claim (found in review: the benefit checks came after the declaration checks)."""

from __future__ import annotations

from core.runtime import Runtime
from crm.models import DeclarationMethod
from tests.giftaid.factories import make_declaration, make_gift, make_supporter
from tests.giftaid.test_eligibility import code_of


def test_a_benefit_too_large_is_the_reason_even_with_no_declaration(runtime: Runtime) -> None:
    gift = make_gift(runtime, make_supporter(runtime), amount=2_000, benefit_amount=1_000)
    assert code_of(runtime, gift) == "benefit_too_large"


def test_a_benefit_too_large_is_the_reason_even_with_an_oral_declaration_unconfirmed(runtime: Runtime) -> None:
    supporter = make_supporter(runtime)
    make_declaration(runtime, supporter, method=DeclarationMethod.ORAL, confirmation_sent_on=None)
    gift = make_gift(runtime, supporter, amount=2_000, benefit_amount=1_000)
    assert code_of(runtime, gift) == "benefit_too_large"
