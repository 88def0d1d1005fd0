"""The rollback handler (functions/rollback/app.py): moves PROD back and returns the message."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
from support.handlers import CONTEXT, DIGEST, Recorder, as_json, sample, wire

from image_cicd.promotion.versions import Rollback

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def test_rollback_moves_prod_back_and_returns_the_message(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("rollback")
    rolled = Rollback("ecr-prod/repo-1", "v0.15", "v0.14", "sha256:" + "14" * 32)
    rollback_prod = Recorder(rolled)
    svc = wire(module, monkeypatch, rollback_prod=rollback_prod)
    event = sample("rollback", {"execution": "rb-1", "input": {"repository": "ecr-prod/repo-1"}})

    result = module.lambda_handler(event, CONTEXT)

    (got_svc, repository, to, execution), _ = rollback_prod.only_call
    assert got_svc is svc
    assert (repository, to, execution) == (
        event["input"]["repository"],
        event["input"].get("to"),
        event["execution"],
    )
    assert as_json(result) == {
        "repository": "ecr-prod/repo-1",
        "from": "v0.15",
        "to": "v0.14",
        "digest": "sha256:" + "14" * 32,
        "message": "Rollback from v0.15 to v0.14",
    }


def test_rollback_to_a_named_version(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("rollback")
    rollback_prod = Recorder(Rollback("ecr-prod/repo-1", "v0.15", "v0.9", DIGEST))
    wire(module, monkeypatch, rollback_prod=rollback_prod)

    module.lambda_handler(
        {"execution": "rb-2", "input": {"repository": "ecr-prod/repo-1", "to": "v0.9"}}, CONTEXT
    )

    assert rollback_prod.only_call[0][1:] == ("ecr-prod/repo-1", "v0.9", "rb-2")
