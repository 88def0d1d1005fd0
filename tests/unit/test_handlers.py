"""The Lambda handlers in functions/*/app.py: parse the payload, call the core, return JSON.

Each handler is loaded by file path under a unique module name with the environment
template.yaml sets. `services` (and `client`) and the workflow function a handler calls
are replaced in the handler module's namespace by recorders returning typed models;
the approval API runs against a real Ledger on moto's in-process DynamoDB.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, cast
from urllib.parse import urlencode

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from pydantic import ValidationError
from support.ledger_table import create_ledger_table

from image_cicd.approvals import endpoint
from image_cicd.approvals.decisions import (
    TaskTokenInvalid,
    csrf_token,
    new_approval_request,
)
from image_cicd.aws.stepfunctions import StepFunctionsNotifier
from image_cicd.ledger.records import ApprovalRequest, CheckResult, TestResults
from image_cicd.ledger.store import Ledger
from image_cicd.promotion.errors import BadInput
from image_cicd.promotion.locks import Locker
from image_cicd.promotion.payloads import (
    ApprovalTask,
    CopyTask,
    ImageFacts,
    NotifyTask,
    Plan,
    PromotionRequest,
    ResolveTask,
    RollbackInput,
    RollbackTask,
    StageCopy,
    TestRun,
    TestsTask,
)
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.steps import Services
from image_cicd.promotion.versions import Rollback
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.media import OCI_INDEX

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

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
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
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
class FakeRegistry:
    host: str = "127.0.0.1:5000"


@dataclass
class FakeLedger:
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def update_promotion(self, execution: str, **fields: Any) -> None:
        self.updates.append((execution, fields))


@dataclass
class Outbox:
    sent: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, topic_arn: str, subject: str, message: str) -> None:
        self.sent.append((topic_arn, subject, message))


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
        connect=lambda: cast(RegistryClient, FakeRegistry()),
        ledger=ledger if ledger is not None else cast(Ledger, FakeLedger()),
        locker=cast(Locker, None),
        publish=Outbox(),
    )


def install(module: ModuleType, monkeypatch: pytest.MonkeyPatch, svc: Services) -> None:
    monkeypatch.setattr(module, "services", lambda: svc)
    if hasattr(module, "client"):
        clients: dict[str, object] = {}
        monkeypatch.setattr(module, "client", lambda name: clients.setdefault(name, object()))


def make_plan() -> Plan:
    return Plan(
        execution="exec-1",
        name="repo-1",
        digest=DIGEST,
        source="ecr-dev/repo-1",
        test="ecr-test/repo-1",
        prod="ecr-prod/repo-1",
        image=ImageFacts(media_type=OCI_INDEX, platforms=["linux/amd64"], size=123_456),
        approval_timeout_seconds=3600,
    )


PLAN = make_plan().model_dump(mode="json")
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


# ------------------------------------------------------------- resolve-repo


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
    svc = fake_services()
    install(module, monkeypatch, svc)
    resolve = Recorder(make_plan())
    monkeypatch.setattr(module, "resolve", resolve)
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
    install(module, monkeypatch, fake_services())
    event = {**resolve_event(), "input": "ecr-dev/repo-1"}

    # Then Step Functions sees BadInput (the class name is the error name)
    with pytest.raises(BadInput, match="must be a JSON object"):
        module.lambda_handler(event, CONTEXT)


def test_resolve_repo_refuses_a_payload_without_execution(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("resolve-repo")
    install(module, monkeypatch, fake_services())
    resolve = Recorder(make_plan())
    monkeypatch.setattr(module, "resolve", resolve)
    event = {k: v for k, v in resolve_event().items() if k != "execution"}

    with pytest.raises(ValidationError, match="execution"):
        module.lambda_handler(event, CONTEXT)
    assert resolve.calls == []


# --------------------------------------------------------- wait-for-approval


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


REQUESTED = {
    "approval_id": "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5",
    "link": "https://abc.execute-api.us-east-1.amazonaws.com/approvals/Zm9vYmFy",
    "expires_at": "2026-03-01T10:00:00+00:00",
    "superseded": ["repo-1-older"],
    "not_superseded": [],
}


@pytest.mark.parametrize("stage", ["TEST", "PROD"])
def test_wait_for_approval_records_the_request_with_the_token_and_returns_its_id(
    stage: str, load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("wait-for-approval")
    svc = fake_services()
    install(module, monkeypatch, svc)
    request_approval = Recorder(REQUESTED)
    monkeypatch.setattr(module, "request_approval", request_approval)
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
    install(module, monkeypatch, fake_services())
    monkeypatch.setattr(module, "request_approval", Recorder(REQUESTED))
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
    install(module, monkeypatch, fake_services())
    request_approval = Recorder(REQUESTED)
    monkeypatch.setattr(module, "request_approval", request_approval)
    event = {**approval_event("TEST"), "stage": "STAGING"}

    with pytest.raises(ValidationError) as caught:
        module.lambda_handler(event, CONTEXT)

    assert "stage" in str(caught.value)
    assert TOKEN not in str(caught.value) + repr(caught.value)
    assert TOKEN not in "".join(capsys.readouterr())
    assert request_approval.calls == []


# ------------------------------------------------- copy to TEST, promote to PROD


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
    svc = fake_services()
    install(module, monkeypatch, svc)
    copied = COPY.model_copy(update={"repository": f"ecr-{stage.lower()}/repo-1"})
    copy_to_stage = Recorder(copied)
    monkeypatch.setattr(module, "copy_to_stage", copy_to_stage)
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
    install(module, monkeypatch, fake_services())
    copy_to_stage = Recorder(COPY)
    monkeypatch.setattr(module, "copy_to_stage", copy_to_stage)

    module.lambda_handler({**copy_event("promote-to-prod", "PROD"), "stage": "TEST"}, CONTEXT)

    assert copy_to_stage.only_call[0][2] == "PROD"


# ----------------------------------------------------------------- rollback


def test_rollback_moves_prod_back_and_returns_the_message(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("rollback")
    svc = fake_services()
    install(module, monkeypatch, svc)
    rolled = Rollback("ecr-prod/repo-1", "v0.15", "v0.14", "sha256:" + "14" * 32)
    rollback_prod = Recorder(rolled)
    monkeypatch.setattr(module, "rollback_prod", rollback_prod)
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
    install(module, monkeypatch, fake_services())
    rollback_prod = Recorder(Rollback("ecr-prod/repo-1", "v0.15", "v0.9", DIGEST))
    monkeypatch.setattr(module, "rollback_prod", rollback_prod)

    module.lambda_handler(
        {"execution": "rb-2", "input": {"repository": "ecr-prod/repo-1", "to": "v0.9"}}, CONTEXT
    )

    assert rollback_prod.only_call[0][1:] == ("ecr-prod/repo-1", "v0.9", "rb-2")


# ------------------------------------------------------------------- notify


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
    svc = fake_services()
    install(module, monkeypatch, svc)
    sent = {"subject": "image-cicd: promotion x (repo-1)", "message": "Promotion exec-1: x"}
    finish = Recorder(sent)
    monkeypatch.setattr(module, "finish", finish)
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
    install(module, monkeypatch, fake_services())
    finish = Recorder({"subject": "s", "message": "m"})
    monkeypatch.setattr(module, "finish", finish)
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
    install(module, monkeypatch, fake_services())
    finish = Recorder({"subject": "s", "message": "m"})
    monkeypatch.setattr(module, "finish", finish)

    with pytest.raises(ValidationError, match="outcome"):
        module.lambda_handler({**NOTIFY_SUCCESS, "outcome": "MAYBE"}, CONTEXT)
    assert finish.calls == []


# ------------------------------------------------------------- approval-api


@dataclass
class FakeNotifier:
    """A TaskNotifier: records what the waiting task would be told."""

    error: Exception | None = None
    successes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def send_success(self, token: str, output: dict[str, Any]) -> None:
        if self.error:
            raise self.error
        self.successes.append((token, output))

    def send_failure(self, token: str, error: str, cause: str) -> None:
        if self.error:
            raise self.error
        self.failures.append((token, error, cause))


@dataclass
class Api:
    """The approval-api handler wired to a real ledger and a fake notifier."""

    handler: Callable[[dict[str, Any], Any], dict[str, Any]]
    ledger: Ledger
    dynamodb: Any
    notifier: FakeNotifier

    def add(self, *, expired: bool = False, stage: str = "PROD") -> ApprovalRequest:
        now = datetime.now(UTC) - (timedelta(hours=2) if expired else timedelta(0))
        approval = new_approval_request(
            execution="exec-1",
            stage="PROD" if stage == "PROD" else "TEST",
            repository="ecr-test/repo-1",
            target_repository="ecr-prod/repo-1",
            digest=DIGEST,
            task_token=TOKEN,
            timeout=timedelta(hours=1),
            now=now,
            version="v0.4",
            tests=TestResults(passed=True, summary="2 check(s) passed"),
        )
        self.ledger.put_approval_request(approval)
        return approval

    def item(self, approval_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.dynamodb.get_item(
            TableName=self.ledger.table_name,
            Key={"pk": {"S": f"APPROVAL#{approval_id}"}, "sk": {"S": "APPROVAL"}},
        )["Item"]
        return found

    def get(self, approval_id: str) -> dict[str, Any]:
        return self.handler(http_event("GET", approval_id), CONTEXT)

    def post(self, approval_id: str, form: dict[str, str], *, b64: bool = False) -> dict[str, Any]:
        body = urlencode(form)
        if b64:
            body = base64.b64encode(body.encode()).decode()
        return self.handler(http_event("POST", approval_id, body, b64), CONTEXT)


def _built_http_event(method: str) -> dict[str, Any]:
    path = "/approvals/Zm9vYmFyYmF6cXV4cXV1eA"
    headers = {
        "accept": "text/html",
        "host": "abc.execute-api.us-east-1.amazonaws.com",
        "user-agent": "Mozilla/5.0 (approver)",
        "x-forwarded-for": "203.0.113.7",
    }
    if method == "POST":
        headers["content-type"] = "application/x-www-form-urlencoded"
    return {
        "version": "2.0",
        "routeKey": f"{method} /approvals/{{id}}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc",
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "Mozilla/5.0 (approver)",
            },
            "requestId": "req-1",
            "routeKey": f"{method} /approvals/{{id}}",
            "stage": "$default",
            "time": "01/Mar/2026:09:00:00 +0000",
            "timeEpoch": 1_772_355_600_000,
        },
        "pathParameters": {"id": "Zm9vYmFyYmF6cXV4cXV1eA"},
        "isBase64Encoded": False,
    }


HTTP_SAMPLES = {
    "GET": sample("approval-api-get", _built_http_event("GET")),
    "POST": sample("approval-api-post", _built_http_event("POST")),
}
SOURCE_IP = HTTP_SAMPLES["POST"]["requestContext"]["http"]["sourceIp"]
USER_AGENT = HTTP_SAMPLES["POST"]["requestContext"]["http"]["userAgent"]


def http_event(
    method: str, approval_id: str, body: str | None = None, b64: bool = False
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) request to /approvals/{id}: the
    sample event of the method, pointed at `approval_id` with `body`."""
    event = deepcopy(HTTP_SAMPLES[method])
    path = f"/approvals/{approval_id}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = dict.fromkeys(event.get("pathParameters") or {"id": ""}, approval_id)
    event["body"] = body
    event["isBase64Encoded"] = b64
    return event


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """One in-process moto DynamoDB for the module (a client is slow to build)."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(name, ENV[name])
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            yield boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def api(load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch, dynamodb: Any) -> Api:
    """The approval API on a fresh ledger table, with a fake TaskNotifier."""
    ledger = Ledger(create_ledger_table(dynamodb, f"ledger-{next(_loaded)}"), dynamodb)
    module = load("approval-api")
    install(module, monkeypatch, fake_services(ledger))
    notifier = FakeNotifier()
    monkeypatch.setattr(module, "StepFunctionsNotifier", lambda _client: notifier)
    return Api(module.lambda_handler, ledger, dynamodb, notifier)


def form(approval: ApprovalRequest, decision: str = "APPROVED", **extra: str) -> dict[str, str]:
    return {
        "decision": decision,
        "approver": "alice@example.com",
        "csrf": csrf_token(approval),
    } | extra


def assert_secure_html(response: dict[str, Any]) -> None:
    headers = {k.lower(): v for k, v in response["headers"].items()}
    for name, value in endpoint.HEADERS.items():
        assert headers[name.lower()] == value
    assert headers["content-type"].startswith("text/html")
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert response["body"].startswith("<!doctype html>")


def test_get_shows_the_approval_page_with_both_buttons(api: Api) -> None:
    approval = api.add()

    response = api.get(approval.approval_id)

    assert response["statusCode"] == 200
    assert_secure_html(response)
    body = response["body"]
    assert "Promote to PROD?" in body
    assert DIGEST in body
    assert 'value="APPROVED"' in body
    assert 'value="REJECTED"' in body
    assert f'value="{csrf_token(approval)}"' in body
    assert TOKEN not in body


def test_get_never_changes_the_ledger(api: Api) -> None:
    approval = api.add()
    before = api.item(approval.approval_id)

    for _ in range(3):  # mail scanners and link previews fetch links more than once
        assert api.get(approval.approval_id)["statusCode"] == 200

    assert api.item(approval.approval_id) == before
    assert api.notifier.successes == []
    assert api.notifier.failures == []


@pytest.mark.parametrize("approval_id", ["A" * 43, "short", "%3Cscript%3E", "x" * 500])
def test_get_of_an_unknown_or_malformed_id_is_404(api: Api, approval_id: str) -> None:
    response = api.get(approval_id)

    assert response["statusCode"] == 404
    assert_secure_html(response)
    assert "Approval not found" in response["body"]


def test_get_of_an_expired_approval_is_410_and_changes_nothing(api: Api) -> None:
    approval = api.add(expired=True)
    before = api.item(approval.approval_id)

    response = api.get(approval.approval_id)

    assert response["statusCode"] == 410
    assert_secure_html(response)
    assert "expired" in response["body"]
    assert api.item(approval.approval_id) == before


@pytest.mark.parametrize("b64", [False, True], ids=["plain", "base64"])
def test_post_approve_decides_records_who_and_resumes_the_workflow(api: Api, b64: bool) -> None:
    approval = api.add()

    response = api.post(approval.approval_id, form(approval, comment="ship it"), b64=b64)

    assert response["statusCode"] == 200
    assert_secure_html(response)
    assert "PROD approved" in response["body"]
    stored = api.ledger.get_approval(approval.approval_id)
    assert stored.status == "APPROVED"
    assert stored.decided_by == "alice@example.com"
    assert stored.comment == "ship it"
    assert stored.source_ip == SOURCE_IP
    assert stored.user_agent == USER_AGENT
    [(token, output)] = api.notifier.successes
    assert token == TOKEN
    assert output["decision"] == "APPROVED"
    assert output["approver"] == "alice@example.com"
    assert api.notifier.failures == []


def test_post_reject_fails_the_waiting_task_with_the_reason(api: Api) -> None:
    approval = api.add()

    response = api.post(
        approval.approval_id, form(approval, "REJECTED", comment="CVE open"), b64=True
    )

    assert response["statusCode"] == 200
    assert "PROD rejected" in response["body"]
    assert api.ledger.get_approval(approval.approval_id).status == "REJECTED"
    assert api.notifier.failures == [
        (TOKEN, "ApprovalRejected", "PROD rejected by alice@example.com: CVE open")
    ]


def test_a_second_post_is_409_and_harmless(api: Api) -> None:
    approval = api.add()
    api.post(approval.approval_id, form(approval))
    decided = api.item(approval.approval_id)

    response = api.post(approval.approval_id, form(approval, "REJECTED"))

    assert response["statusCode"] == 409
    assert_secure_html(response)
    assert "Already decided" in response["body"]
    assert "alice@example.com" in response["body"]
    assert api.item(approval.approval_id) == decided
    assert len(api.notifier.successes) == 1
    assert api.notifier.failures == []


def test_get_after_the_decision_is_409(api: Api) -> None:
    approval = api.add()
    api.post(approval.approval_id, form(approval))

    assert api.get(approval.approval_id)["statusCode"] == 409


@pytest.mark.parametrize(
    "change",
    [
        {"csrf": "forged"},
        {"csrf": ""},
        {"decision": "MAYBE"},
        {"approver": ""},
        {"comment": "bad\x00byte"},
    ],
)
def test_a_tampered_or_incomplete_post_is_400_and_decides_nothing(
    api: Api, change: dict[str, str]
) -> None:
    approval = api.add()

    response = api.post(approval.approval_id, form(approval) | change)

    assert response["statusCode"] == 400
    assert_secure_html(response)
    assert api.ledger.get_approval(approval.approval_id).status == "PENDING"
    assert api.notifier.successes == []
    assert api.notifier.failures == []


def test_a_form_that_is_not_utf8_is_400_and_decides_nothing(api: Api) -> None:
    # Given a form with a valid CSRF token whose comment is Latin-1, not UTF-8
    approval = api.add()
    body = urlencode(form(approval)).encode() + b"&comment=caf%E9+" + b"\xe9\xff"
    event = http_event("POST", approval.approval_id, base64.b64encode(body).decode(), True)

    response = api.handler(event, CONTEXT)

    assert response["statusCode"] == 400
    assert_secure_html(response)
    assert "UTF-8" in response["body"]
    assert api.ledger.get_approval(approval.approval_id).status == "PENDING"
    assert api.notifier.successes == []
    assert api.notifier.failures == []


def test_the_csrf_token_of_another_approval_is_refused(api: Api) -> None:
    one, other = api.add(), api.add()

    response = api.post(one.approval_id, form(other))

    assert response["statusCode"] == 400
    assert api.ledger.get_approval(one.approval_id).status == "PENDING"


def test_post_to_an_unknown_approval_is_404(api: Api) -> None:
    approval = api.add()

    response = api.post("B" * 43, form(approval))

    assert response["statusCode"] == 404
    assert api.notifier.successes == []


def test_post_after_expiry_is_410_and_records_the_expiry(api: Api) -> None:
    approval = api.add(expired=True)

    response = api.post(approval.approval_id, form(approval))

    assert response["statusCode"] == 410
    assert_secure_html(response)
    assert api.ledger.get_approval(approval.approval_id).status == "EXPIRED"
    assert api.notifier.successes == []


def test_post_when_step_functions_no_longer_waits_is_410(api: Api) -> None:
    approval = api.add()
    api.notifier.error = TaskTokenInvalid("TaskTimedOut")

    response = api.post(approval.approval_id, form(approval))

    assert response["statusCode"] == 410
    assert api.ledger.get_approval(approval.approval_id).status == "EXPIRED"


def test_post_when_step_functions_cannot_be_reached_is_503_and_can_be_retried(
    api: Api,
) -> None:
    # Given Step Functions throttles: decide() puts the approval back to PENDING
    approval = api.add()
    api.notifier.error = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "SendTaskSuccess"
    )

    response = api.post(approval.approval_id, form(approval))

    # Then the approver gets the "please try again" page, not a bare 500
    assert response["statusCode"] == 503
    assert_secure_html(response)
    assert api.ledger.get_approval(approval.approval_id).status == "PENDING"


def test_a_comment_with_markup_comes_back_escaped(api: Api) -> None:
    approval = api.add()
    evil = '<script>alert("x")</script>'

    response = api.post(approval.approval_id, form(approval, "REJECTED", comment=evil))
    again = api.post(approval.approval_id, form(approval))  # already decided page

    for page in (response, again):
        assert "<script>" not in page["body"]
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page["body"]
    assert api.ledger.get_approval(approval.approval_id).comment == evil


def test_the_approval_api_never_logs_the_task_token(
    api: Api, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # (INFO: botocore's own DEBUG lines show DynamoDB bodies, a deployment never runs so)
    caplog.set_level(logging.INFO)
    approval = api.add()

    api.get(approval.approval_id)
    api.post(approval.approval_id, form(approval))

    out, err = capsys.readouterr()
    assert "decision posted" in out + err + caplog.text
    assert TOKEN not in out + err + caplog.text


# ------------------------------------------------------------- sample events


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
