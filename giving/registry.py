"""Imports every package's tables so `SQLModel.metadata` is complete (alembic, tests, the schema check)."""

from sqlmodel import SQLModel

import core.models
import crm.models
import giftaid.models
import payments.models
import receipts.models
import webhooks.models

metadata = SQLModel.metadata

__all__ = ["core", "crm", "giftaid", "metadata", "payments", "receipts", "webhooks"]
