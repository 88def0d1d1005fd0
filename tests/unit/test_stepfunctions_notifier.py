"""The Step Functions adapter of the approvals' TaskNotifier port: SDK errors become the
port's errors, so nothing above it knows botocore."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from image_cicd.approvals.decisions import NotifierUnavailable, TaskTokenInvalid
from image_cicd.aws.stepfunctions import StepFunctionsNotifier


class FailingClient:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def send_task_success(self, **_: Any) -> None:
        raise self.error

    def send_task_failure(self, **_: Any) -> None:
        raise self.error


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "SendTaskSuccess")


@pytest.mark.parametrize("code", ["TaskTimedOut", "InvalidToken", "TaskDoesNotExist"])
def test_a_task_that_no_longer_waits_is_task_token_invalid(code: str) -> None:
    notifier = StepFunctionsNotifier(FailingClient(client_error(code)))  # type: ignore[arg-type]
    with pytest.raises(TaskTokenInvalid):
        notifier.send_success("token", {})
    with pytest.raises(TaskTokenInvalid):
        notifier.send_failure("token", "ApprovalRejected", "no")


@pytest.mark.parametrize(
    "error",
    [
        client_error("ThrottlingException"),
        client_error("ServiceUnavailable"),
        EndpointConnectionError(endpoint_url="https://states.example"),
    ],
    ids=["throttled", "unavailable", "unreachable"],
)
def test_an_engine_that_cannot_be_reached_is_notifier_unavailable(error: Exception) -> None:
    notifier = StepFunctionsNotifier(FailingClient(error))  # type: ignore[arg-type]
    with pytest.raises(NotifierUnavailable):
        notifier.send_success("token", {})
    with pytest.raises(NotifierUnavailable):
        notifier.send_failure("token", "ApprovalRejected", "no")
