"""Executions started with input that is not a JSON object, run by moto's ASL
interpreter with the real Lambda handlers: each fails as BadInput in its first
task, and the failure is notified (SNS, the stack's inbox) like any other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from image_cicd.aws.operations import wait_finished
from image_cicd.aws.stack import DeployedStack
from image_cicd.local.stack import LocalStack

NOT_OBJECTS = ["[]", "null", '"x"', "17", '[{"repository": "ecr-dev/repo-1"}]']


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        tmp_path_factory.mktemp("bad-input"), parameters={"Repositories": "repo-1"}
    ) as s:
        yield s


def notification(stack: LocalStack, execution: str, timeout: float = 60) -> dict[str, str]:
    """The notification SNS delivered to the stack about `execution`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in stack.inbox.messages():
            if execution in message["message"]:
                return message
        time.sleep(0.1)
    raise AssertionError(f"no notification about {execution}: {stack.inbox.messages()}")


@pytest.mark.parametrize("machine", ["promotion", "rollback"])
@pytest.mark.parametrize("given", NOT_OBJECTS)
def test_input_that_is_not_an_object_fails_as_bad_input_and_is_notified(
    stack: LocalStack, t: DeployedStack, machine: str, given: str
) -> None:
    arn = t.promotion_arn if machine == "promotion" else t.rollback_arn
    sfn = t.client("stepfunctions")

    started = sfn.start_execution(stateMachineArn=arn, input=given)["executionArn"]
    desc = wait_finished(t, started)

    assert (desc["status"], desc["error"]) == ("FAILED", "BadInput"), desc.get("cause")
    assert "must be a JSON object" in json.loads(desc["cause"])["errorMessage"]
    message = notification(stack, desc["name"])
    assert message["subject"] == f"image-cicd: {machine} failed"
    assert "Reason: BadInput: the input must be a JSON object" in message["message"]


def test_a_failure_notice_still_names_the_repository_the_input_asked_for(
    stack: LocalStack, t: DeployedStack
) -> None:
    sfn = t.client("stepfunctions")
    asked = json.dumps({"repository": "ecr-test/repo-1"})
    desc = wait_finished(
        t, sfn.start_execution(stateMachineArn=t.rollback_arn, input=asked)["executionArn"]
    )
    assert desc["error"] == "BadInput"
    assert (
        notification(stack, desc["name"])["subject"]
        == "image-cicd: rollback failed (ecr-test/repo-1)"
    )
