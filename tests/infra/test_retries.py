"""Transient, named errors of the core are retried by the state machines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

MACHINES = Path(__file__).resolve().parents[2] / "statemachines"


def retried(machine: str, state: str) -> set[str]:
    definition = json.loads((MACHINES / f"{machine}.asl.json").read_text())
    return {e for r in definition["States"][state].get("Retry", []) for e in r["ErrorEquals"]}


@pytest.mark.parametrize(
    ("machine", "state", "errors"),
    [
        ("promotion", "Copy to TEST", {"RegistryUnavailable", "LockBusy", "LeaseLost"}),
        ("promotion", "Promote to PROD", {"RegistryUnavailable", "LockBusy", "LeaseLost"}),
        ("promotion", "Run tests", {"RegistryUnavailable", "ScanInProgress"}),
        ("rollback", "Roll back PROD", {"RegistryUnavailable", "LockBusy", "LeaseLost"}),
    ],
)
def test_transient_errors_are_retried(machine: str, state: str, errors: set[str]) -> None:
    assert errors <= retried(machine, state)


def test_the_retried_names_are_the_core_exception_classes() -> None:
    from image_cicd.promotion.errors import ScanInProgress
    from image_cicd.promotion.locks import LeaseLost, LockBusy
    from image_cicd.registry.errors import RegistryUnavailable

    names = {cls.__name__ for cls in (ScanInProgress, LockBusy, LeaseLost, RegistryUnavailable)}
    assert names == {"ScanInProgress", "LockBusy", "LeaseLost", "RegistryUnavailable"}


# What Step Functions' lambda:invoke reports when the function's process dies (killed,
# crashed, killed for its memory): the function's errorType, `Runtime.ExitError`
# ("Runtime exited with error: signal: killed"); `Lambda.Unknown` is the name AWS
# documents for unhandled errors it has no errorType for. Every step is safe to run
# again (the copies finish what a dead attempt left), so every Lambda task retries them.
RUNTIME_ERRORS = {"Lambda.Unknown", "Runtime.ExitError"}


def lambda_tasks(machine: str) -> dict[str, dict[str, Any]]:
    definition = json.loads((MACHINES / f"{machine}.asl.json").read_text())
    return {
        name: state
        for name, state in definition["States"].items()
        if state["Type"] == "Task" and state["Resource"].startswith("arn:aws:states:::lambda:")
    }


@pytest.mark.parametrize("machine", ["promotion", "rollback"])
def test_every_lambda_task_retries_a_dead_runtime_with_backoff(machine: str) -> None:
    tasks = lambda_tasks(machine)
    assert tasks
    for name, state in tasks.items():
        retriers = [r for r in state.get("Retry", []) if RUNTIME_ERRORS & set(r["ErrorEquals"])]
        assert len(retriers) == 1, f"{machine}/{name}: no (or more than one) runtime retrier"
        (retrier,) = retriers
        assert set(retrier["ErrorEquals"]) == RUNTIME_ERRORS, f"{machine}/{name}"
        assert retrier["MaxAttempts"] >= 2, f"{machine}/{name}"
        assert retrier["IntervalSeconds"] >= 1, f"{machine}/{name}"
        assert retrier["BackoffRate"] > 1, f"{machine}/{name}"
        assert retrier.get("JitterStrategy") == "FULL", f"{machine}/{name}"
