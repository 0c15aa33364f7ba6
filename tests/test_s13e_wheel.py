"""contract.md: 'Every command works from any directory after `pip install` (editable or not): migrations, templates
and fonts ship as package data.' Built as a wheel (what a non-editable install unpacks), the packages carry every file
they have in the source tree, and the wheel's files alone run `giving db upgrade` and `giving demo` in an empty
directory: migrations, templates, the packaged fonts and HMRC's .ods schedule all found."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("giving", "core", "crm", "payments", "receipts", "webhooks", "giftaid")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def source_files() -> set[str]:
    """Every file of the packages in the source tree, following giving/alembic -> ../alembic."""
    found = set()
    for package in PACKAGES:
        for folder, dirs, files in os.walk(ROOT / package, followlinks=True):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if not name.endswith(".pyc"):
                    found.add((Path(folder) / name).relative_to(ROOT).as_posix())
    return found


def clean_env(**more: str) -> dict[str, str]:
    # Nothing of the developer's (or the test run's) settings.
    env = {name: value for name, value in os.environ.items() if not name.startswith("GIVING_")}
    env.pop("PYTHONPATH", None)
    return {**env, **more}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel by pip, from a copy of the tree (a build writes build/ and *.egg-info there)."""
    source = tmp_path_factory.mktemp("source")
    for package in [*PACKAGES, "alembic"]:
        shutil.copytree(ROOT / package, source / package, symlinks=True, ignore=IGNORED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        cwd=out,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if built.returncode != 0 and "setuptools" in built.stderr and "satisf" in built.stderr:
        pytest.skip("the build backend (setuptools>=69, wheel) cannot be fetched from the package index")
    assert built.returncode == 0, built.stderr[-4000:]
    [found] = out.glob("giving-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_holds_every_file_of_the_packages(wheel: Path) -> None:
    names = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
    assert names == source_files()
    # What the commands read at run time, named so a failure says which.
    for needed in (
        "receipts/fonts/DejaVuSans.ttf",
        "receipts/fonts/DejaVuSans-Bold.ttf",
        "receipts/fonts/LICENSE.txt",
        "receipts/templates/documents.css",
        "receipts/templates/gift_receipt.html",
        "giftaid/hmrc_gift_aid_schedule.ods",
        "giving/alembic/env.py",
        "giving/alembic/script.py.mako",
        "giving/staff/static/staff.css",
        "payments/templates/donate.html",
    ):
        assert needed in names
    migrations = {p.relative_to(ROOT / "alembic").as_posix() for p in (ROOT / "alembic" / "versions").rglob("*.py")}
    assert migrations and {f"giving/alembic/{m}" for m in migrations if "__pycache__" not in m} <= names


@pytest.mark.slow
def test_the_wheels_files_alone_run_the_commands_from_an_empty_directory(wheel: Path, tmp_path: Path) -> None:
    """The wheel unpacked as pip would into site-packages (the third-party dependencies from this environment), the
    project's own tree nowhere on the path, and the commands run in a directory that holds nothing."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    empty = tmp_path / "empty"
    empty.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    giving = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "import receipts.render, giving.cli; "
        "assert receipts.render.__file__.startswith(sys.path[0]), receipts.render.__file__; "
        "giving.cli.main()"
    )
    env = clean_env(TMPDIR=str(scratch))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", giving, str(site), *args],
            cwd=empty,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    upgraded = run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout[-2000:] + upgraded.stderr[-4000:]
    assert (empty / "var" / "giving.sqlite3").is_file()

    demo = run("demo")
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    assert "All checks passed" in demo.stdout
    assert list((empty / "var" / "demo" / "claims").glob("*.ods"))
    receipt = next((empty / "var" / "demo" / "receipts").rglob("*.pdf"))
    fonts = subprocess.run(["pdffonts", str(receipt)], check=True, capture_output=True, text=True).stdout
    assert "+Giving-Sans " in fonts and "+Giving-Sans-Bold " in fonts
    # The packaged fonts' temporary copies went with the processes that rendered.
    assert list(scratch.iterdir()) == []
