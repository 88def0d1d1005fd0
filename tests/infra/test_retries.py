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


CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
Retrier = tuple[frozenset[str], float, float, int, str]


def documented_retries() -> list[tuple[Retrier, str]]:
    """docs/contracts.md "Retries": (errors, interval, backoff, attempts, jitter), states."""
    text = CONTRACTS.read_text(encoding="utf-8")
    section = text.split("### Retries", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    assert rows, "no Retries table in docs/contracts.md"
    table = []
    for row in rows:
        errors, interval, backoff, attempts, states = (c.strip() for c in row.strip("|").split("|"))
        names = frozenset(e.strip().strip("`") for e in errors.split(","))
        table.append(((names, float(interval), float(backoff), int(attempts), "FULL"), states))
    return table


def task_kind(state: dict[str, Any]) -> str:
    resource = state["Resource"]
    if resource.startswith("arn:aws:states:::lambda:"):
        return "every Lambda task"
    if resource.startswith("arn:aws:states:::sns:"):
        return "every SNS task"
    raise AssertionError(f"add the retries of {resource} tasks to docs/contracts.md")


def test_every_retry_block_of_both_machines_is_the_documented_one() -> None:
    table = documented_retries()
    seen: set[str] = set()
    for machine in ("promotion", "rollback"):
        definition = json.loads((MACHINES / f"{machine}.asl.json").read_text())
        for name, state in definition["States"].items():
            if state["Type"] != "Task":
                assert "Retry" not in state, f"{machine}/{name}"
                continue
            kind = task_kind(state)
            seen |= {name, kind}
            expected = {
                retrier
                for retrier, states in table
                if states == kind or name in (s.strip() for s in states.split(","))
            }
            actual = [
                (
                    frozenset(r["ErrorEquals"]),
                    float(r["IntervalSeconds"]),
                    float(r["BackoffRate"]),
                    int(r["MaxAttempts"]),
                    r.get("JitterStrategy", "NONE"),
                )
                for r in state.get("Retry", [])
            ]
            assert len(set(actual)) == len(actual), f"{machine}/{name}: a retrier twice"
            assert set(actual) == expected, f"{machine}/{name}"
            errors = [e for retrier in actual for e in retrier[0]]
            assert len(errors) == len(set(errors)), f"{machine}/{name}: an error in two retriers"
    # and the table names no state that does not exist
    named = {s.strip() for _, states in table for s in states.split(",")}
    assert named <= seen, f"docs/contracts.md names unknown states {sorted(named - seen)}"
