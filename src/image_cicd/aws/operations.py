"""What a person does with a deployed stack: find what waits for approval, decide
through the approval endpoint (as a browser would), start and follow executions.
Used by the CLI, the demo and the tests; the same on AWS and locally.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import requests
from botocore.exceptions import ClientError

from image_cicd.approvals.decisions import (
    FIELD_APPROVER,
    FIELD_COMMENT,
    FIELD_CSRF,
    FIELD_DECISION,
    approval_link,
)
from image_cicd.aws.stack import DeployedStack
from image_cicd.aws.stepfunctions import execution_arn_for
from image_cicd.ledger.records import ApprovalRequest, Decision


class OperatorError(Exception):
    pass


# What Step Functions answers for an execution that is not there (or not a valid name).
NO_SUCH_EXECUTION = ("ExecutionDoesNotExist", "InvalidArn", "ValidationException")


def execution_arn(stack: DeployedStack, name_or_arn: str) -> str:
    """An execution ARN from a name of either state machine (or an ARN) that exists,
    or from any prefix of a name that begins exactly one execution (as git takes one
    of a commit); a whole name wins over longer names it begins.

    Only "no such execution" answers mean "not this one": an endpoint that cannot be
    reached raises as it is, so that nobody is told an execution does not exist.
    """
    sfn = stack.client("stepfunctions")
    machines = (stack.promotion_arn, stack.rollback_arn)
    if name_or_arn.startswith("arn:"):
        candidates = [name_or_arn]
    else:
        candidates = [execution_arn_for(m, name_or_arn) for m in machines]
    for arn in candidates:
        try:
            sfn.describe_execution(executionArn=arn)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in NO_SUCH_EXECUTION:
                continue
            raise
        return arn
    if name_or_arn and not name_or_arn.startswith("arn:"):
        pages = (
            page
            for machine in machines
            for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine)
        )
        matches = [
            ex for page in pages for ex in page["executions"] if ex["name"].startswith(name_or_arn)
        ]
        if len(matches) == 1:
            return str(matches[0]["executionArn"])
        if matches:
            names = ", ".join(sorted(ex["name"] for ex in matches))
            raise OperatorError(
                f"{name_or_arn!r} is ambiguous: it begins {len(matches)} executions: {names}"
            )
    raise OperatorError(f"no execution named {name_or_arn!r} in stack {stack.name}")


def pending_approval(
    stack: DeployedStack, execution: str, *, wait_seconds: float = 0.0
) -> ApprovalRequest | None:
    """The approval an execution waits for now (waiting up to `wait_seconds`)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        for approval in stack.ledger.list_approvals("PENDING"):
            if approval.execution == execution:
                return approval
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


class _Form(HTMLParser):
    """The decision forms of an approval page: decision value -> hidden fields."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({})
        elif tag == "input" and self.forms and values.get("type") == "hidden":
            self.forms[-1][values.get("name", "")] = values.get("value", "")


@dataclass(frozen=True)
class DecisionResult:
    status: int
    page: str


def decide_via_endpoint(
    link: str,
    decision: Decision,
    approver: str,
    comment: str | None = None,
    *,
    session: requests.Session | None = None,
) -> DecisionResult:
    """GET the approval page (which decides nothing), then POST its form."""
    http = session or requests.Session()
    page = http.get(link, timeout=30)
    if page.status_code != 200:
        return DecisionResult(page.status_code, page.text)
    parser = _Form()
    parser.feed(page.text)
    form = next((f for f in parser.forms if f.get(FIELD_DECISION) == decision), None)
    if form is None or FIELD_CSRF not in form:
        raise OperatorError(f"the approval page at {link} has no {decision} form")
    fields = {**form, FIELD_APPROVER: approver, FIELD_COMMENT: comment or ""}
    answer = http.post(link, data=fields, timeout=60)
    return DecisionResult(answer.status_code, answer.text)


def approve(
    stack: DeployedStack,
    execution: str,
    decision: Decision,
    approver: str,
    comment: str | None = None,
    *,
    wait_seconds: float = 30.0,
) -> tuple[ApprovalRequest, DecisionResult]:
    """Decide the approval `execution` waits for, through the approval endpoint."""
    approval = pending_approval(stack, execution, wait_seconds=wait_seconds)
    if approval is None:
        raise OperatorError(f"{execution} is not waiting for an approval")
    link = approval_link(stack.output("ApprovalBaseUrl"), approval.approval_id)
    return approval, decide_via_endpoint(link, decision, approver, comment)


def start_rollback(
    stack: DeployedStack,
    repository: str,
    to: str | None = None,
    *,
    expected: str | None = None,
    key: str | None = None,
) -> str:
    """Start a rollback of `repository`; its execution ARN.

    `expected` (the input's `from`) is where the caller saw `latest`: the rollback
    fails with LatestMoved if it is no longer there. `key` (hex) names the execution:
    starting again with the same key starts nothing and answers the same execution
    (Step Functions answers a running one of that name and input with its ARN, and
    ExecutionAlreadyExists otherwise; moto always the latter).
    """
    payload: dict[str, Any] = {"repository": repository}
    if to:
        payload["to"] = to
    if expected:
        payload["from"] = expected
    name = f"rollback-{repository.rsplit('/', 1)[-1]}-{key or uuid.uuid4().hex[:12]}"
    try:
        started = stack.client("stepfunctions").start_execution(
            stateMachineArn=stack.rollback_arn, name=name, input=json.dumps(payload)
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ExecutionAlreadyExists" or key is None:
            raise
        return execution_arn_for(stack.rollback_arn, name)
    return str(started["executionArn"])


def start_promotion(stack: DeployedStack, repository: str, digest: str) -> str:
    name = f"{repository.rsplit('/', 1)[-1]}-{uuid.uuid4()}"
    started = stack.client("stepfunctions").start_execution(
        stateMachineArn=stack.promotion_arn,
        name=name,
        input=json.dumps({"repository": repository, "digest": digest}),
    )
    return str(started["executionArn"])


def wait_finished(stack: DeployedStack, arn: str, *, timeout: float = 120.0) -> dict[str, Any]:
    """describe_execution once the execution is no longer RUNNING."""
    sfn = stack.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while True:
        desc: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc
        if time.monotonic() > deadline:
            raise OperatorError(f"{desc['name']} still running after {timeout:g} s")
        time.sleep(0.2)
