"""The kit of the Lambda handler tests (tests/unit/test_handler_*.py): each handler is
loaded by file path under a unique module name with the environment template.yaml sets
(the ``load`` fixture, registered by tests/unit/conftest.py). `services` (and `client`)
and the workflow function a handler calls are replaced in the handler module's namespace
by recorders returning typed models.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest

from image_cicd.ledger.records import CheckResult
from image_cicd.ledger.store import Ledger
from image_cicd.promotion.locks import Locker
from image_cicd.promotion.payloads import ImageFacts, StageCopy, TestRun
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.steps import Services
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.media import OCI_INDEX
from support.aws import FAKE_CREDENTIALS
from support.fakes import FakeRegistry, Outbox, make_plan

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
EVENTS = ROOT / "events"

TOKEN = "AAAAKgAAAAIAAAAAAAAAAf-task-token-that-must-never-be-logged-9c1f"
DIGEST = "sha256:" + "5e" * 32
TEST_MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:repo-1-tests"

ENV = {
    # template.yaml Globals
    "REPOSITORIES": "repo-1,repo-2",
    "DEV_PREFIX": "ecr-dev",
    "TEST_PREFIX": "ecr-test",
    "PROD_PREFIX": "ecr-prod",
    "REGISTRY_URL": "http://127.0.0.1:5000",
    "VERSION_FORMAT": "v{major}.{minor}",
    "LEDGER_TABLE": "ledger",
    "APPROVALS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:approvals",
    "NOTIFICATIONS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:notifications",
    "APPROVAL_BASE_URL": "https://abc.execute-api.us-east-1.amazonaws.com/",
    "APPROVAL_TIMEOUT_SECONDS": "3600",
    "TEST_CONFIG": json.dumps({"repo-1": {"non_root": True, "state_machine_arn": TEST_MACHINE}}),
    "POWERTOOLS_SERVICE_NAME": "image-cicd",
    "POWERTOOLS_METRICS_NAMESPACE": "test",
    "POWERTOOLS_TRACE_DISABLED": "1",
    # boto3 clients are never used for real here, but must be constructible
    **FAKE_CREDENTIALS,
}

_loaded = itertools.count()


class FakeContext:
    """What Powertools reads from the Lambda context."""

    function_name = "image-cicd-TestFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:image-cicd-TestFunction"
    aws_request_id = "00000000-0000-4000-8000-000000000001"
    log_group_name = "/aws/lambda/image-cicd-TestFunction"
    log_stream_name = "2026/03/01/[$LATEST]0"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


CONTEXT = FakeContext()


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """load("resolve-repo") -> the handler module, freshly imported with ENV set."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "POWERTOOLS_LOGGER_LOG_EVENT", "POWERTOOLS_DEV"):
        monkeypatch.delenv(name, raising=False)

    def load(function: str) -> ModuleType:
        path = FUNCTIONS / function / "app.py"
        module_name = f"handler_{function.replace('-', '_')}_{next(_loaded)}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def sample(name: str, fallback: dict[str, Any]) -> dict[str, Any]:
    """events/<name>.json when the project has it, else the payload built from the ASL."""
    path = EVENTS / f"{name}.json"
    if path.exists():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    return fallback


# ------------------------------------------------------------------- fakes


@dataclass
class FakeLedger:
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def update_promotion(self, execution: str, **fields: Any) -> None:
        self.updates.append((execution, fields))


@dataclass
class Recorder:
    """Stands in for a workflow function: records its arguments, returns `result`."""

    result: Any = None
    error: Exception | None = None
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def only_call(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


def fake_services(ledger: Any = None) -> Services:
    return Services(
        settings=Settings.from_env(ENV),
        connect=lambda: cast(RegistryClient, FakeRegistry("ecr-test/repo-1")),
        ledger=ledger if ledger is not None else cast(Ledger, FakeLedger()),
        locker=cast(Locker, None),
        publish=Outbox(),
    )


def install(module: ModuleType, monkeypatch: pytest.MonkeyPatch, svc: Services) -> None:
    monkeypatch.setattr(module, "services", lambda: svc)
    if hasattr(module, "client"):
        clients: dict[str, object] = {}
        monkeypatch.setattr(module, "client", lambda name: clients.setdefault(name, object()))


def wire(module: ModuleType, monkeypatch: pytest.MonkeyPatch, **steps: Recorder) -> Services:
    """Give handler ``module`` fake services and replace the core functions it calls by
    ``steps`` (name=recorder); returns the services the handler gets."""
    svc = fake_services()
    install(module, monkeypatch, svc)
    for name, recorder in steps.items():
        monkeypatch.setattr(module, name, recorder)
    return svc


PLAN_MODEL = make_plan(
    digest=DIGEST,
    image=ImageFacts(media_type=OCI_INDEX, platforms=["linux/amd64"], size=123_456),
)
PLAN = PLAN_MODEL.model_dump(mode="json")
COPY = StageCopy(
    repository="ecr-test/repo-1",
    digest=DIGEST,
    version="v0.3",
    new_version=True,
    latest_moved=True,
    previous_version="v0.2",
    blobs_mounted=3,
    bytes_moved=0,
    seconds=0.12,
)
RUNNING = TestRun(
    passed=False,
    status="RUNNING",
    summary="built-in checks passed; test state machine running",
    checks=[CheckResult(name="content", passed=True, detail="ok")],
    execution_arn="arn:aws:states:us-east-1:123456789012:execution:repo-1-tests:exec-1-tests",
    poll_seconds=10,
    started_at=1_772_355_600.0,
)


def as_json(result: Any) -> Any:
    """The handler's answer as Step Functions will see it (must be JSON)."""
    return json.loads(json.dumps(result))


REQUESTED = {
    "approval_id": "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5",
    "link": "https://abc.execute-api.us-east-1.amazonaws.com/approvals/Zm9vYmFy",
    "expires_at": "2026-03-01T10:00:00+00:00",
    "superseded": ["repo-1-older"],
    "not_superseded": [],
}
