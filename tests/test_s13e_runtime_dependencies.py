"""contract.md: every command works after `pip install` (editable or not). A plain install brings only [project]
dependencies (and theirs), not the `test` extra: a module the packages import at run time from a distribution only
the extra brings is missing there, and every `giving` command that imports it fails with ModuleNotFoundError."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("giving", "core", "crm", "payments", "receipts", "webhooks", "giftaid")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


class _RuntimeImports(ast.NodeVisitor):
    """Top-level names of absolute imports, leaving out those only type checkers run (`if TYPE_CHECKING:`) and those
    guarded by `except ImportError`."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
        )
        if guarded:
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name.split(".")[0] for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.names.add(node.module.split(".")[0])


def third_party_imports() -> dict[str, set[str]]:
    """Module name -> the files importing it, for modules neither in the standard library nor ours."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            visitor = _RuntimeImports()
            visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
            for name in visitor.names - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}:
                found.setdefault(name, set()).add(path.relative_to(ROOT).as_posix())
    return found


def runtime_closure() -> set[str]:
    """The distributions a plain `pip install giving` brings: [project] dependencies and, recursively, theirs."""
    wanted = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        extras = requirement.extras
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for text in importlib.metadata.requires(name) or []:
            dependency = Requirement(text)
            environments = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dependency.marker is None or any(dependency.marker.evaluate(env) for env in environments):
                wanted.append(dependency)
    return {key.split("[")[0] for key in seen}


def test_every_module_the_packages_import_comes_with_a_plain_install() -> None:
    distributions = importlib.metadata.packages_distributions()
    closure = runtime_closure()
    missing = {
        module: sorted(files)
        for module, files in third_party_imports().items()
        if not any(canonicalize_name(d) in closure for d in distributions.get(module, []))
    }
    assert missing == {}
