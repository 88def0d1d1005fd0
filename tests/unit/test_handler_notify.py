"""The notify handler (functions/notify/app.py): finishes the workflow with its outcome."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError
from support.handlers import CONTEXT, COPY, PLAN, Recorder, as_json, sample, wire

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


NOTIFY_SUCCESS = {
    "execution": "exec-1",
    "workflow": "PROMOTION",
    "outcome": "SUCCEEDED",
    "details": {
        "plan": PLAN,
        "test": {"copy": COPY.model_dump(mode="json")},
        "prod": {"promotion": COPY.model_dump(mode="json") | {"repository": "ecr-prod/repo-1"}},
    },
}
NOTIFY_FAILURE = {
    "execution": "exec-1",
    "workflow": "PROMOTION",
    "outcome": "REJECTED",
    "failure": {
        "error": "ApprovalRejected",
        "outcome": "REJECTED",
        "cause": "PROD rejected by alice",
        "stage": "PROD",
    },
    "details": {"plan": PLAN, "caught": {"Error": "ApprovalRejected", "Cause": "x"}},
}


@pytest.mark.parametrize(
    ("name", "fallback"), [("notify-success", NOTIFY_SUCCESS), ("notify-failure", NOTIFY_FAILURE)]
)
def test_notify_finishes_with_workflow_outcome_details_and_failure(
    name: str,
    fallback: dict[str, Any],
    load: Callable[[str], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = load("notify")
    sent = {"subject": "image-cicd: promotion x (repo-1)", "message": "Promotion exec-1: x"}
    finish = Recorder(sent)
    svc = wire(module, monkeypatch, finish=finish)
    event = sample(name, fallback)

    result = module.lambda_handler(event, CONTEXT)

    (got_svc, workflow, execution, outcome, details, failure), _ = finish.only_call
    assert got_svc is svc
    assert (workflow, execution, outcome) == (
        event["workflow"],
        event["execution"],
        event["outcome"],
    )
    assert details == event["details"]
    assert failure == event.get("failure")
    assert as_json(result) == sent
    metric = f'"{event["workflow"].title()}{event["outcome"].title()}"'
    assert metric in capsys.readouterr().out


def test_notify_of_a_rollback(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("notify")
    finish = Recorder({"subject": "s", "message": "m"})
    wire(module, monkeypatch, finish=finish)
    details = {"rollback": {"repository": "ecr-prod/repo-1", "message": "Rollback from a to b"}}
    event = sample(
        "notify-rollback",
        {"execution": "rb-1", "workflow": "ROLLBACK", "outcome": "SUCCEEDED", "details": details},
    )

    module.lambda_handler(event, CONTEXT)

    assert finish.only_call[0][1:] == (
        "ROLLBACK",
        event["execution"],
        event["outcome"],
        event["details"],
        None,
    )


def test_notify_refuses_an_unknown_outcome(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("notify")
    finish = Recorder({"subject": "s", "message": "m"})
    wire(module, monkeypatch, finish=finish)

    with pytest.raises(ValidationError, match="outcome"):
        module.lambda_handler({**NOTIFY_SUCCESS, "outcome": "MAYBE"}, CONTEXT)
    assert finish.calls == []
