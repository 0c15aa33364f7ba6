"""Running the alembic migrations from any directory (they ship with the package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic.config import Config

from core.db import normalise_url

PACKAGES = ("core", "crm", "payments", "webhooks", "receipts", "giftaid")


def migrations_dir() -> Path:
    """The top-level `alembic/` folder, reached through the `giving/alembic` link so it ships in the wheel."""
    spec = importlib.util.find_spec("giving")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "alembic"


def alembic_config(url: str) -> Config:
    root = migrations_dir()
    config = Config()
    config.set_main_option("script_location", str(root))
    config.set_main_option("version_locations", " ".join(str(root / "versions" / name) for name in PACKAGES))
    config.set_main_option("path_separator", "space")
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
