"""The run-tests handler (functions/run-tests/app.py): parse the task, call the core's
`run_tests` once with the services and the check ports, return its run as JSON.

Uses the handler loader and payload fixtures of support/handlers.py; the step itself
(start or poll, the ledger record) is tested in test_run_tests_step.py.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import support.handlers as kit
from pydantic import ValidationError
from support.handlers import (
    CONTEXT,
    COPY,
    PLAN,
    RUNNING,
    Recorder,
    as_json,
    fake_services,
    install,
    sample,
)

from image_cicd.promotion.payloads import TestsTask

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

load = kit.load


def run_tests_event(action: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "execution": "exec-1",
        "action": action,
        "plan": PLAN,
        "copy": COPY.model_dump(mode="json"),
        "timeout_seconds": "1800",  # "${TestTimeoutSeconds}" arrives as text
    }
    if action == "poll":
        payload["run"] = RUNNING.model_dump(mode="json")
    return sample(f"run-tests-{action}", payload)


@pytest.mark.parametrize("action", ["start", "poll"])
def test_run_tests_calls_the_step_once_with_the_services_the_ports_and_the_task(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    module = load("run-tests")
    svc = fake_services()
    install(module, monkeypatch, svc)
    ports = object()
    monkeypatch.setattr(module, "check_ports", lambda: ports)
    step = Recorder(RUNNING)
    monkeypatch.setattr(module, "run_tests", step)
    event = run_tests_event(action)

    result = module.lambda_handler(event, CONTEXT)

    assert step.only_call == ((svc, ports, TestsTask.model_validate(event)), {})
    assert as_json(result) == RUNNING.model_dump(mode="json")


def test_run_tests_refuses_an_unknown_action_before_calling_the_step(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("run-tests")
    install(module, monkeypatch, fake_services())
    monkeypatch.setattr(module, "check_ports", object)
    step = Recorder(RUNNING)
    monkeypatch.setattr(module, "run_tests", step)

    with pytest.raises(ValidationError, match="action"):
        module.lambda_handler({**run_tests_event("start"), "action": "stop"}, CONTEXT)

    assert step.calls == []
