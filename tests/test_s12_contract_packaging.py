"""contract.md: 'Every command works from any directory after `pip install` (editable or not): migrations, templates
and fonts ship as package data.' A non-editable install ships only the files pyproject.toml's package data names:
every file the packages read at run time (anything but Python source) and every migration must match a pattern
there, or it is silently left out of the wheel."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES = ("giving", "core", "crm", "payments", "receipts", "webhooks", "giftaid")


def shipped(package: str, relative: str) -> bool:
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    patterns = [*data.get("*", []), *data.get(package, [])]
    name = relative.rsplit("/", 1)[-1]
    # setuptools: a pattern without a slash matches a file name in any folder of the package ("*" entries are
    # matched per folder); one with a slash matches the path from the package root.
    return any(fnmatch.fnmatch(relative if "/" in p else name, p) for p in patterns)


def data_files(package: str) -> list[str]:
    root = ROOT / package
    found = []
    for path in root.rglob("*"):  # follows giving/alembic -> ../alembic
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".py", ".pyc"):
            found.append(path.relative_to(root).as_posix())
    return found


def test_every_data_file_of_the_packages_is_package_data() -> None:
    missing = [f"{p}/{f}" for p in PACKAGES for f in data_files(p) if not shipped(p, f)]
    assert missing == []


def test_every_migration_is_package_data() -> None:
    migrations = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "alembic" / "versions").rglob("*.py"))
    assert migrations
    assert (ROOT / "giving" / "alembic").resolve() == (ROOT / "alembic").resolve()
    missing = [m for m in migrations if not shipped("giving", m) and "__pycache__" not in m]
    assert missing == []


def test_the_packages_are_all_found() -> None:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in PACKAGES:
        assert f"{package}*" in include
        assert (ROOT / package / "__init__.py").is_file()
    assert PYPROJECT["project"]["scripts"] == {"giving": "giving.cli:main"}
