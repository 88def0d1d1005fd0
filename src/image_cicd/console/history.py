"""Per-state status of an execution, from its Step Functions history.

Used by `image-cicd show` / `graph` and the local console; works on the history
of AWS Step Functions and of moto's interpreter alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["succeeded", "failed", "caught", "running", "waiting", "not reached"]

_FAILED_TASK = (
    "TaskFailed",
    "TaskTimedOut",
    "LambdaFunctionFailed",
    "LambdaFunctionTimedOut",
    "TaskStartFailed",
    "TaskSubmitFailed",
)


@dataclass
class StateRun:
    name: str
    type: str
    status: Status = "not reached"
    entered: datetime | None = None
    exited: datetime | None = None
    input: str | None = None
    output: str | None = None
    error: str | None = None
    cause: str | None = None
    visits: int = 0
    retries: int = 0

    @property
    def seconds(self) -> float | None:
        if self.entered and self.exited:
            return (self.exited - self.entered).total_seconds()
        return None


@dataclass
class ExecutionView:
    name: str
    arn: str
    status: str
    started: datetime | None
    stopped: datetime | None
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    states: dict[str, StateRun] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)

    @property
    def waiting(self) -> list[StateRun]:
        return [s for s in self.states.values() if s.status == "waiting"]


def _events(sfn: Any, arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            return sorted(events, key=lambda e: int(e["id"]))
        kwargs["nextToken"] = page["nextToken"]


def states_of(
    definition: dict[str, Any], events: list[dict[str, Any]], status: str
) -> tuple[dict[str, StateRun], list[str]]:
    """Every state of `definition` with its status in this history, and the path taken."""
    states = {
        name: StateRun(name=name, type=str(spec.get("Type", "")))
        for name, spec in definition.get("States", {}).items()
    }
    path: list[str] = []
    current: StateRun | None = None
    failed_in_state = False
    for event in events:
        kind = str(event["type"])
        if kind.endswith("StateEntered"):
            details = event.get("stateEnteredEventDetails", {})
            current = states.setdefault(details["name"], StateRun(details["name"], kind[:-12]))
            current.status = "running"
            current.entered, current.exited = event["timestamp"], None
            current.input = details.get("input")
            current.error = current.cause = None
            current.visits += 1
            failed_in_state = False
            path.append(current.name)
            if current.type == "Fail":
                current.status = "failed"
        elif kind.endswith("StateExited") and current is not None:
            details = event.get("stateExitedEventDetails", {})
            run = states.get(details.get("name", current.name), current)
            run.exited = event["timestamp"]
            run.output = details.get("output")
            run.status = "caught" if failed_in_state else "succeeded"
        elif current is None:
            continue
        elif kind == "TaskSubmitted" or (
            kind == "TaskScheduled"
            and str(event.get("taskScheduledEventDetails", {}).get("resource", "")).endswith(
                "waitForTaskToken"
            )
        ):
            if current.status == "running":
                current.status = "waiting"
        elif kind in ("TaskScheduled", "LambdaFunctionScheduled") and current.error:
            current.retries += 1
            current.status = "running"
        elif kind in _FAILED_TASK:
            failure: dict[str, Any] = next(
                (v for k, v in event.items() if k.endswith("EventDetails")), {}
            )
            current.error = failure.get("error")
            current.cause = failure.get("cause")
            current.exited = event["timestamp"]
            failed_in_state = True
            current.status = "caught"
        elif kind in ("TaskSucceeded", "LambdaFunctionSucceeded"):
            current.error = current.cause = None
            failed_in_state = False
            current.status = "running"
        elif kind == "ExecutionFailed" and current.type != "Fail":
            details = event.get("executionFailedEventDetails", {})
            current.status = "failed"
            current.error = current.error or details.get("error")
            current.cause = current.cause or details.get("cause")
    if status != "RUNNING":
        for run in states.values():
            if run.status in ("running", "waiting"):
                run.status = (
                    "failed" if status in ("FAILED", "TIMED_OUT", "ABORTED") else "succeeded"
                )
    return states, path


def view(sfn: Any, execution_arn: str, definition: dict[str, Any] | None = None) -> ExecutionView:
    """Describe an execution with the status of every state of its machine."""
    desc = sfn.describe_execution(executionArn=execution_arn)
    if definition is None:
        machine = sfn.describe_state_machine(stateMachineArn=desc["stateMachineArn"])
        definition = json.loads(machine["definition"])
    events = _events(sfn, execution_arn)
    states, path = states_of(definition, events, desc["status"])
    output = desc.get("output")
    given = json.loads(desc.get("input") or "{}")  # any JSON: a start may pass [] or "x"
    return ExecutionView(
        name=desc["name"],
        arn=execution_arn,
        status=desc["status"],
        started=desc.get("startDate"),
        stopped=desc.get("stopDate"),
        input=given if isinstance(given, dict) else {},
        output=json.loads(output) if output else None,
        error=desc.get("error"),
        cause=desc.get("cause"),
        states=states,
        path=path,
    )
