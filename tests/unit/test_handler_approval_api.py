"""The approval-api handler (functions/approval-api/app.py): the approval page and the
decision, on a real Ledger on moto's in-process DynamoDB, with a fake task notifier."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.exceptions import ClientError
from support.handlers import CONTEXT, DIGEST, TOKEN, fake_services, install, sample

from image_cicd.approvals import endpoint
from image_cicd.approvals.decisions import (
    NotifierUnavailable,
    TaskTokenInvalid,
    csrf_token,
    new_approval_request,
)
from image_cicd.ledger.records import ApprovalRequest, TestResults
from image_cicd.ledger.store import Ledger

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


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


@pytest.fixture
def api(
    load: Callable[[str], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    dynamodb: Any,
    ledger: Ledger,
) -> Api:
    """The approval API on a fresh ledger table, with a fake TaskNotifier."""
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
    api.notifier.error = NotifierUnavailable("Step Functions: ThrottlingException")

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


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_when_the_ledger_cannot_be_reached_the_page_is_503_and_nothing_is_decided(
    api: Api, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    # Given DynamoDB throttles every read
    approval = api.add()

    def throttled(approval_id: str) -> None:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}},
            "GetItem",
        )

    monkeypatch.setattr(api.ledger, "get_approval", throttled)

    # When the approver opens or posts the page
    if method == "GET":
        response = api.get(approval.approval_id)
    else:
        response = api.post(approval.approval_id, form(approval))

    # Then the "please try again" page, not a bare 500, and nothing was decided
    assert response["statusCode"] == 503
    assert_secure_html(response)
    monkeypatch.undo()
    assert api.ledger.get_approval(approval.approval_id).status == "PENDING"
    assert api.notifier.successes == []
