"""The wait-for-approval handler (functions/wait-for-approval/app.py): records the request with
the task token, and never logs the token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError
from support.handlers import (
    CONTEXT,
    COPY,
    PLAN,
    REQUESTED,
    RUNNING,
    TOKEN,
    Recorder,
    as_json,
    sample,
    wire,
)

from image_cicd.aws.stepfunctions import StepFunctionsNotifier
from image_cicd.ledger.records import TestResults
from image_cicd.promotion.payloads import Plan, TestRun

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def approval_event(stage: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "execution": "exec-1",
        "task_token": TOKEN,
        "stage": stage,
        "plan": PLAN,
    }
    if stage == "PROD":
        payload["test"] = COPY.model_dump(mode="json")
        payload["tests"] = RUNNING.model_copy(
            update={"status": "PASSED", "passed": True, "duration_seconds": 42.0}
        ).model_dump(mode="json")
    return sample(f"wait-for-approval-{stage.lower()}", payload)


@pytest.mark.parametrize("stage", ["TEST", "PROD"])
def test_wait_for_approval_records_the_request_with_the_token_and_returns_its_id(
    stage: str, load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("wait-for-approval")
    request_approval = Recorder(REQUESTED)
    svc = wire(module, monkeypatch, request_approval=request_approval)
    event = approval_event(stage)

    result = module.lambda_handler(event, CONTEXT)

    (got_svc, plan, got_stage, token), kwargs = request_approval.only_call
    assert got_svc is svc
    assert plan == Plan.model_validate(event["plan"])
    assert got_stage == event["stage"] == stage
    assert token == event["task_token"]
    assert type(kwargs.pop("notifier")) is StepFunctionsNotifier  # ends superseded tasks
    if "tests" in event:
        tests = kwargs["tests"]
        assert type(tests) is TestResults
        assert tests == TestRun.model_validate(event["tests"]).results()
    else:
        assert kwargs == {"tests": None}
    # The approval id, the link and the token stay out of the execution history.
    assert as_json(result) == {"expires_at": REQUESTED["expires_at"]}


@pytest.mark.parametrize("stage", ["TEST", "PROD"])
def test_wait_for_approval_never_logs_the_task_token(
    stage: str,
    load: Callable[[str], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)
    module = load("wait-for-approval")
    wire(module, monkeypatch, request_approval=Recorder(REQUESTED))
    event = approval_event(stage)

    module.lambda_handler(event, CONTEXT)

    out, err = capsys.readouterr()
    logged = out + err + caplog.text
    assert "approval requested" in logged  # the handler's log line was captured
    assert event["task_token"] not in logged


def test_wait_for_approval_validation_errors_do_not_echo_the_token(
    load: Callable[[str], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = load("wait-for-approval")
    request_approval = Recorder(REQUESTED)
    wire(module, monkeypatch, request_approval=request_approval)
    event = {**approval_event("TEST"), "stage": "STAGING"}

    with pytest.raises(ValidationError) as caught:
        module.lambda_handler(event, CONTEXT)

    assert "stage" in str(caught.value)
    assert TOKEN not in str(caught.value) + repr(caught.value)
    assert TOKEN not in "".join(capsys.readouterr())
    assert request_approval.calls == []
