"""The sample events in events/: each is a valid payload of its function's model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from support.handlers import EVENTS

from image_cicd.promotion.payloads import (
    ApprovalTask,
    CopyTask,
    NotifyTask,
    PromotionRequest,
    ResolveTask,
    RollbackInput,
    RollbackTask,
    TestsTask,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


SAMPLE_MODELS: dict[str, Callable[[Any], Any]] = {
    "resolve-repo-": ResolveTask.model_validate,
    "wait-for-approval-": ApprovalTask.model_validate,
    "retag-and-copy-manifest": CopyTask.model_validate,
    "promote-to-prod": CopyTask.model_validate,
    "run-tests-": TestsTask.model_validate,
    "notify-": NotifyTask.model_validate,
    "rollback-input": RollbackInput.model_validate,
    "rollback.json": RollbackTask.model_validate,
    "promotion-input-": PromotionRequest.parse,
}
SAMPLES = sorted(
    p.name for p in EVENTS.glob("*.json") if any(p.name.startswith(k) for k in SAMPLE_MODELS)
)


@pytest.mark.parametrize("name", SAMPLES or ["(no sample events)"])
def test_every_sample_event_is_a_valid_payload(name: str) -> None:
    # Given a sample from events/ (the payload a state machine task sends its function)
    assert SAMPLES, "events/ holds no sample payloads"
    raw = json.loads((EVENTS / name).read_text())
    parser = next(parse for prefix, parse in SAMPLE_MODELS.items() if name.startswith(prefix))

    # Then the function's model accepts it
    parsed = parser(raw)

    if "execution" in raw:
        assert parsed.execution == raw["execution"]
    if "task_token" in raw:
        assert raw["task_token"] not in repr(parsed)
