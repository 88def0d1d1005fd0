"""The packages depend on each other one way only (docs/architecture.md): the core knows
nothing of the console, the CLI or the embedded stack, and only `local/` and `cli/`
know the embedded stack."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "image_cicd"
CORE = ("promotion", "approvals", "ledger", "registry", "aws", "web")


def imported(package: str) -> dict[str, set[str]]:
    """module path -> the image_cicd modules it imports (top level and in functions)."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(PACKAGE))] = {n for n in names if n.startswith("image_cicd")}
    return found


@pytest.mark.parametrize("package", CORE)
def test_the_core_imports_no_console_cli_or_local(package: str) -> None:
    wrong = {
        module: sorted(
            n
            for n in names
            if n.startswith(("image_cicd.console", "image_cicd.cli", "image_cicd.local"))
        )
        for module, names in imported(package).items()
    }
    assert {m: n for m, n in wrong.items() if n} == {}


def test_the_console_does_not_know_the_embedded_stack_or_the_cli() -> None:
    wrong = {
        module: sorted(n for n in names if n.startswith(("image_cicd.local", "image_cicd.cli")))
        for module, names in imported("console").items()
    }
    assert {m: n for m, n in wrong.items() if n} == {}
