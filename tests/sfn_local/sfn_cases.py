"""The Step Functions Local test cases: where they are, what they must end in, and a
small path simulator that walks an ASL definition with a test case's mocked responses.

The simulator is not an ASL engine. It follows exactly what the two state machines use
(Task with Retry/Catch/ResultSelector/ResultPath, Pass with Parameters, Choice on
StringEquals or IsNull, Wait, Succeed, Fail with ErrorPath) so that the mock configuration can be
checked without Docker: every test case mocks every Task it reaches, mocks nothing it
does not reach, and ends where :data:`EXPECTED` says. On Docker, test_sfn_local.py runs
the same test cases on the real Step Functions Local engine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MOCK_CONFIG = Path(__file__).resolve().parent / "MockConfigFile.json"
DEFINITIONS = {
    "Promotion": ROOT / "statemachines" / "promotion.asl.json",
    "Rollback": ROOT / "statemachines" / "rollback.asl.json",
}


@dataclass(frozen=True)
class Outcome:
    """How an execution of a test case ends."""

    status: str  # SUCCEEDED | FAILED
    last_state: str
    error: str | None = None


EXPECTED: dict[str, dict[str, Outcome]] = {
    "Promotion": {
        "HappyPath": Outcome("SUCCEEDED", "Promoted"),
        "TestRejected": Outcome("FAILED", "Promotion failed", "ApprovalRejected"),
        "ProdRejected": Outcome("FAILED", "Promotion failed", "ApprovalRejected"),
        "ApprovalExpired": Outcome("FAILED", "Promotion failed", "ApprovalExpired"),
        "ProdApprovalExpired": Outcome("FAILED", "Promotion failed", "ApprovalExpired"),
        "TestsFailed": Outcome("FAILED", "Promotion failed", "TestsFailed"),
        "ImageNotFound": Outcome("FAILED", "Promotion failed", "ImageNotFound"),
        "RegistryRetried": Outcome("SUCCEEDED", "Promoted"),
        "NotifyFailureFallback": Outcome("FAILED", "Promotion failed", "ImageNotFound"),
        "NotifySuccessFallback": Outcome("SUCCEEDED", "Promoted"),
        "AlreadyPromoted": Outcome("SUCCEEDED", "Already promoted"),
        "TestSuperseded": Outcome("FAILED", "Promotion failed", "PromotionSuperseded"),
        "ProdSuperseded": Outcome("FAILED", "Promotion failed", "PromotionSuperseded"),
    },
    "Rollback": {
        "RolledBack": Outcome("SUCCEEDED", "Rolled back"),
        "NothingToRollBack": Outcome("FAILED", "Rollback failed", "NothingToRollBack"),
        "NotifySuccessFallback": Outcome("SUCCEEDED", "Rolled back"),
        "NotifyFailureFallback": Outcome("FAILED", "Rollback failed", "NothingToRollBack"),
    },
}

# Execution inputs used by both the simulator and Step Functions Local.
INPUTS: dict[str, dict[str, Any]] = {
    "Promotion": {
        "repository": "ecr-dev/repo-1",
        "digest": "sha256:288606229140e7a185f01099e99cfc66f13f7c0701528264b8f93b0ef0f8c82c",
    },
    "Rollback": {"repository": "ecr-prod/repo-1"},
}


def load_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def mock_config() -> dict[str, Any]:
    return load_json(MOCK_CONFIG)


def definition(machine: str) -> dict[str, Any]:
    return load_json(DEFINITIONS[machine])


@dataclass
class Run:
    """What the simulator saw."""

    path: list[str] = field(default_factory=list)
    status: str = "RUNNING"
    error: str | None = None
    cause: str | None = None
    mocked_states_used: set[str] = field(default_factory=set)
    output: Any = None


class SimulationError(AssertionError):
    """The definition and the test case do not fit together."""


def _chosen(rule: dict[str, Any], value: Any) -> bool:
    if "IsNull" in rule:
        return (value is None) == rule["IsNull"]
    return bool(value == rule["StringEquals"])


class _TaskFailed(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause


_PATH_PART = re.compile(r"^[A-Za-z0-9_]+$")


def read_path(data: Any, path: str, context: dict[str, Any]) -> Any:
    """Resolve a simple reference path (``$``, ``$.a.b``, ``$$.Execution.Name``)."""
    if path.startswith("States."):
        return f"<{path.split('(', 1)[0]}>"  # intrinsic function: not evaluated here
    root: Any = context if path.startswith("$$") else data
    rest = path[2:] if path.startswith("$$") else path[1:]
    value = root
    for part in [p for p in rest.split(".") if p]:
        if not _PATH_PART.match(part):
            raise SimulationError(f"unsupported path {path!r}")
        if not isinstance(value, dict) or part not in value:
            raise SimulationError(f"path {path!r} not found (States.Runtime) in {value!r}")
        value = value[part]
    return value


def write_path(data: Any, path: str | None, value: Any) -> Any:
    """Apply a ResultPath."""
    if path is None:
        return data
    if path == "$":
        return value
    parts = path[2:].split(".")
    result = json.loads(json.dumps(data)) if isinstance(data, dict) else {}
    node = result
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value
    return result


def render(template: Any, data: Any, context: dict[str, Any]) -> Any:
    """Evaluate a payload template (Parameters / ResultSelector)."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = read_path(data, value, context)
            else:
                out[key] = render(value, data, context)
        return out
    if isinstance(template, list):
        return [render(item, data, context) for item in template]
    return template


def _response(responses: dict[str, Any], index: int, name: str) -> dict[str, Any]:
    for key, response in responses.items():
        low, _, high = key.partition("-")
        if int(low) <= index <= int(high or low):
            assert isinstance(response, dict)
            return response
    raise SimulationError(f"mocked response {name!r} has no answer for invocation {index}")


def _matches(error: str, names: list[str]) -> bool:
    return error in names or ("States.ALL" in names and error != "States.Runtime")


def simulate(machine: str, case: str, max_steps: int = 200) -> Run:
    """Walk ``machine`` with the mocks of ``case`` and report the path taken."""
    config = mock_config()
    asl = definition(machine)
    mocks: dict[str, str] = config["StateMachines"][machine]["TestCases"][case]
    responses: dict[str, dict[str, Any]] = config["MockedResponses"]
    states: dict[str, Any] = asl["States"]
    run = Run()
    data: Any = json.loads(json.dumps(INPUTS[machine]))
    context = {"Execution": {"Name": f"{case}-sim", "StartTime": "2026-11-26T07:03:18Z"}}
    name: str = asl["StartAt"]
    for _ in range(max_steps):
        run.path.append(name)
        state = states[name]
        kind = state["Type"]
        next_name: str | None = state.get("Next")
        if kind == "Task":
            if name not in mocks:
                raise SimulationError(f"{machine}/{case}: Task {name!r} is reached but not mocked")
            run.mocked_states_used.add(name)
            task_context = {**context, "Task": {"Token": "token-" + name}}
            render(state.get("Parameters", {}), data, task_context)  # every path must resolve
            try:
                result = _invoke(state, responses[mocks[name]], mocks[name])
            except _TaskFailed as failed:
                catcher = next(
                    (c for c in state.get("Catch", []) if _matches(failed.error, c["ErrorEquals"])),
                    None,
                )
                if catcher is None:
                    run.status, run.error, run.cause = "FAILED", failed.error, failed.cause
                    return run
                data = write_path(
                    data,
                    catcher.get("ResultPath", "$"),
                    {"Error": failed.error, "Cause": failed.cause},
                )
                next_name = catcher["Next"]
            else:
                if "ResultSelector" in state:
                    result = render(state["ResultSelector"], result, context)
                data = write_path(data, state.get("ResultPath", "$"), result)
        elif kind == "Pass":
            value = render(state["Parameters"], data, context) if "Parameters" in state else data
            data = write_path(data, state.get("ResultPath", "$"), value)
        elif kind == "Choice":
            next_name = state.get("Default")
            for rule in state["Choices"]:
                if _chosen(rule, read_path(data, rule["Variable"], context)):
                    next_name = rule["Next"]
                    break
            if next_name is None:
                raise SimulationError(
                    f"{name}: no choice matched and no Default (States.NoChoiceMatched)"
                )
        elif kind == "Wait":
            seconds = (
                read_path(data, state["SecondsPath"], context) if "SecondsPath" in state else 0
            )
            if not isinstance(seconds, int) or seconds < 0:
                raise SimulationError(f"{name}: SecondsPath gives {seconds!r}, not seconds")
        elif kind == "Succeed":
            run.status, run.output = "SUCCEEDED", data
            return run
        elif kind == "Fail":
            run.status = "FAILED"
            run.error = (
                read_path(data, state["ErrorPath"], context)
                if "ErrorPath" in state
                else state.get("Error")
            )
            run.cause = (
                read_path(data, state["CausePath"], context)
                if "CausePath" in state
                else state.get("Cause")
            )
            return run
        else:
            raise SimulationError(f"state type {kind} is not simulated")
        if state.get("End"):
            run.status, run.output = "SUCCEEDED", data
            return run
        if next_name is None:
            raise SimulationError(f"{name}: no Next")
        name = next_name
    raise SimulationError(f"{machine}/{case}: more than {max_steps} steps")


def _invoke(state: dict[str, Any], responses: dict[str, Any], response_name: str) -> Any:
    attempts: dict[int, int] = {}
    invocation = 0
    while True:
        response = _response(responses, invocation, response_name)
        invocation += 1
        if "Return" in response:
            return response["Return"]
        error = str(response["Throw"]["Error"])
        cause = str(response["Throw"].get("Cause", ""))
        for index, retrier in enumerate(state.get("Retry", [])):
            if _matches(error, retrier["ErrorEquals"]):
                if attempts.get(index, 0) < int(retrier.get("MaxAttempts", 3)):
                    attempts[index] = attempts.get(index, 0) + 1
                    break
                raise _TaskFailed(error, cause)
        else:
            raise _TaskFailed(error, cause)
