"""The resolve-repo handler (functions/resolve-repo/app.py): execution input in, plan out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError
from support.handlers import (
    CONTEXT,
    DIGEST,
    PLAN,
    PLAN_MODEL,
    Recorder,
    as_json,
    sample,
    wire,
)

from image_cicd.promotion.errors import BadInput

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


RESOLVE_INPUTS = {
    "resolve-repo-direct": {"repository": "ecr-dev/repo-1", "digest": DIGEST},
    "resolve-repo-image-detail": {"RepositoryName": "ecr-dev/repo-1", "ImageDigest": DIGEST},
}


def resolve_event(name: str = "resolve-repo-direct") -> dict[str, Any]:
    return sample(
        name,
        {
            "execution": "exec-1",
            "input": RESOLVE_INPUTS[name],
            "started_at": "2026-03-01T09:00:00.123Z",
        },
    )


@pytest.mark.parametrize("name", sorted(RESOLVE_INPUTS))
def test_resolve_repo_passes_the_execution_input_and_returns_the_plan(
    name: str, load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("resolve-repo")
    resolve = Recorder(PLAN_MODEL)
    svc = wire(module, monkeypatch, resolve=resolve)
    event = resolve_event(name)

    result = module.lambda_handler(event, CONTEXT)

    (got_svc, raw_input, execution, started_at), kwargs = resolve.only_call
    assert got_svc is svc
    assert raw_input == event["input"]
    assert execution == event["execution"]
    assert isinstance(started_at, datetime)
    assert started_at.tzinfo is not None
    assert kwargs == {}
    assert as_json(result) == PLAN


def test_resolve_repo_raises_the_named_error_of_the_core(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the real core and an input that is not an object
    module = load("resolve-repo")
    wire(module, monkeypatch)
    event = {**resolve_event(), "input": "ecr-dev/repo-1"}

    # Then Step Functions sees BadInput (the class name is the error name)
    with pytest.raises(BadInput, match="must be a JSON object"):
        module.lambda_handler(event, CONTEXT)


def test_resolve_repo_refuses_a_payload_without_execution(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("resolve-repo")
    resolve = Recorder(PLAN_MODEL)
    wire(module, monkeypatch, resolve=resolve)
    event = {k: v for k, v in resolve_event().items() if k != "execution"}

    with pytest.raises(ValidationError, match="execution"):
        module.lambda_handler(event, CONTEXT)
    assert resolve.calls == []
