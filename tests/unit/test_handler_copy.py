"""The retag-and-copy-manifest and promote-to-prod handlers (functions/*/app.py): the same
copy_to_stage, each with its stage fixed by the function."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from support.handlers import (
    CONTEXT,
    COPY,
    PLAN,
    REQUESTED,
    Recorder,
    as_json,
    sample,
    wire,
)

from image_cicd.promotion.payloads import Plan, StageCopy

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def copy_event(function: str, stage: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "execution": "exec-1",
        "stage": stage,
        "plan": PLAN,
        "approval": {"approval_id": REQUESTED["approval_id"]},
    }
    if stage == "PROD":
        payload["test"] = COPY.model_dump(mode="json")
    return sample(function, payload)


@pytest.mark.parametrize(
    ("function", "stage"), [("retag-and-copy-manifest", "TEST"), ("promote-to-prod", "PROD")]
)
def test_copy_handlers_copy_the_pinned_digest_into_their_stage(
    function: str,
    stage: str,
    load: Callable[[str], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    module = load(function)
    copied = COPY.model_copy(update={"repository": f"ecr-{stage.lower()}/repo-1"})
    copy_to_stage = Recorder(copied)
    svc = wire(module, monkeypatch, copy_to_stage=copy_to_stage)
    event = copy_event(function, stage)

    result = module.lambda_handler(event, CONTEXT)

    (got_svc, plan, got_stage), kwargs = copy_to_stage.only_call
    assert got_svc is svc
    assert plan == Plan.model_validate(event["plan"])
    assert got_stage == stage  # fixed by the function, not taken from the payload
    assert kwargs == {}
    assert as_json(result) == copied.model_dump(mode="json")
    assert StageCopy.model_validate(result) == copied
    assert '"BlobsMounted"' in capsys.readouterr().out  # the metric was published


def test_promote_to_prod_ignores_a_stage_in_the_payload(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("promote-to-prod")
    copy_to_stage = Recorder(COPY)
    wire(module, monkeypatch, copy_to_stage=copy_to_stage)

    module.lambda_handler({**copy_event("promote-to-prod", "PROD"), "stage": "TEST"}, CONTEXT)

    assert copy_to_stage.only_call[0][2] == "PROD"
