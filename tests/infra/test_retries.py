"""Transient, named errors of the core are retried by the state machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MACHINES = Path(__file__).resolve().parents[2] / "statemachines"


def retried(machine: str, state: str) -> set[str]:
    definition = json.loads((MACHINES / f"{machine}.asl.json").read_text())
    return {e for r in definition["States"][state].get("Retry", []) for e in r["ErrorEquals"]}


@pytest.mark.parametrize(
    ("machine", "state", "errors"),
    [
        ("promotion", "Copy to TEST", {"RegistryUnavailable", "LockBusy"}),
        ("promotion", "Promote to PROD", {"RegistryUnavailable", "LockBusy"}),
        ("promotion", "Run tests", {"RegistryUnavailable", "ScanInProgress"}),
        ("rollback", "Roll back PROD", {"RegistryUnavailable", "LockBusy"}),
    ],
)
def test_transient_errors_are_retried(machine: str, state: str, errors: set[str]) -> None:
    assert errors <= retried(machine, state)


def test_the_retried_names_are_the_core_exception_classes() -> None:
    from image_cicd.errors import ScanInProgress
    from image_cicd.locks import LockBusy
    from image_cicd.registry.errors import RegistryUnavailable

    names = {cls.__name__ for cls in (ScanInProgress, LockBusy, RegistryUnavailable)}
    assert names == {"ScanInProgress", "LockBusy", "RegistryUnavailable"}
