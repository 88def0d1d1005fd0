"""Transient, named errors of the core are retried by the state machines."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import image_cicd

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


# Error names Step Functions and Lambda define themselves (States.ALL, Lambda.Unknown,
# Runtime.ExitError, ...); every other name in the ASL is one of the project's errors.
SERVICE_ERROR_PREFIXES = ("States.", "Lambda.", "Runtime.")


def asl_error_names(states: dict[str, Any]) -> set[str]:
    """The error names a definition's states Retry, Catch, Fail with or set in a Pass."""
    names: set[str] = set()
    for state in states.values():
        for handler in [*state.get("Retry", []), *state.get("Catch", [])]:
            names.update(handler["ErrorEquals"])
        if state["Type"] == "Fail" and "Error" in state:
            names.add(state["Error"])
        if state["Type"] == "Pass" and "error" in state.get("Parameters", {}):
            names.add(state["Parameters"]["error"])
        for branch in state.get("Branches", []):
            names |= asl_error_names(branch["States"])
        for key in ("Iterator", "ItemProcessor"):
            if key in state:
                names |= asl_error_names(state[key]["States"])
    return names


def project_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the image_cicd package, by name."""
    classes: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(image_cicd.__path__, "image_cicd."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
            ):
                classes[value.__name__] = value
    return classes


@pytest.mark.parametrize("machine", ["promotion", "rollback"])
def test_every_error_name_in_the_asl_is_an_exception_class_of_the_project(machine: str) -> None:
    definition = json.loads((MACHINES / f"{machine}.asl.json").read_text())
    names = {
        name
        for name in asl_error_names(definition["States"])
        if not name.startswith(SERVICE_ERROR_PREFIXES)
    }
    assert names, f"{machine}: no project error names found (the walk is broken)"
    unknown = names - set(project_exception_classes())
    assert not unknown, f"{machine}: error names that no exception class of the project has"


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
