"""Payments use cases: checkouts, gifts, regular gifts, refunds, disputes, the shop. Never commits."""

from __future__ import annotations

from sqlmodel import select

from core.db import UnitOfWork
from payments.models import PartnerCampaign, Product, Sku

DEFAULT_CATALOGUE = [
    # (product code, name, partner campaign code or None, price in pence, sizes with stock)
    ("TEE-SOLIDARITY", "Solidarity not charity T-shirt", None, 1500, {"S": 20, "M": 30, "L": 30, "XL": 20}),
    ("TEE-LMHR", "Love Music Hate Racism T-shirt", "LMHR", 1800, {"S": 15, "M": 25, "L": 25, "XL": 15}),
]


def ensure_default_catalogue(uow: UnitOfWork) -> None:
    """Leave a stocked default catalogue (idempotent: existing products are left as they are)."""
    session = uow.session
    campaign = session.exec(select(PartnerCampaign).where(PartnerCampaign.code == "LMHR")).first()
    if campaign is None:
        campaign = PartnerCampaign(
            code="LMHR",
            name="Love Music Hate Racism",
            partner_name="Love Music Hate Racism",
            share_kind="per_item",
            share_value=500,
        )
        session.add(campaign)
        session.flush()
    for code, name, partner, price, sizes in DEFAULT_CATALOGUE:
        if session.exec(select(Product).where(Product.code == code)).first() is not None:
            continue
        product = Product(code=code, name=name, partner_campaign_id=campaign.id if partner else None)
        session.add(product)
        session.flush()
        for position, (size, stock) in enumerate(sizes.items()):
            session.add(
                Sku(sku=f"{code}-{size}", product_id=product.id, size=size, price=price, stock=stock, position=position)
            )
    session.flush()
