"""Step Functions behind the core's ports: the approval task's notifier
(`approvals.decisions.TaskNotifier`) and the repositories' test machines
(`promotion.checks.TestMachines`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError

from image_cicd.approvals.decisions import NotifierUnavailable, TaskNotifier, TaskTokenInvalid

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

_TOKEN_GONE = {"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"}


def execution_arn_for(state_machine_arn: str, name: str) -> str:
    """The ARN of a standard state machine's execution called ``name``."""
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"


class StepFunctionsNotifier(TaskNotifier):
    """Completes ``.waitForTaskToken`` tasks through the Step Functions API."""

    def __init__(self, client: SFNClient) -> None:
        self.client = client

    def send_success(self, token: str, output: dict[str, Any]) -> None:
        try:
            self.client.send_task_success(taskToken=token, output=json.dumps(output))
        except (ClientError, BotoCoreError) as error:
            self._raise(error)

    def send_failure(self, token: str, error: str, cause: str) -> None:
        try:
            self.client.send_task_failure(taskToken=token, error=error, cause=cause)
        except (ClientError, BotoCoreError) as sdk_error:
            self._raise(sdk_error)

    @staticmethod
    def _raise(error: ClientError | BotoCoreError) -> NoReturn:
        code = error.response["Error"]["Code"] if isinstance(error, ClientError) else ""
        if code in _TOKEN_GONE:
            raise TaskTokenInvalid(code) from None
        raise NotifierUnavailable(f"Step Functions: {error}") from error


class StepFunctionsTestMachines:
    def __init__(self, sfn_client: Any) -> None:
        self._sfn = sfn_client

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str:
        try:
            started = self._sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload)
            )
        except self._sfn.exceptions.ExecutionAlreadyExists:  # a retried start
            return execution_arn_for(state_machine_arn, name)
        return str(started["executionArn"])

    def stop(self, execution_arn: str, cause: str) -> None:
        self._sfn.stop_execution(executionArn=execution_arn, error="TestsTimedOut", cause=cause)

    def status(self, execution_arn: str) -> tuple[str, str]:
        found = self._sfn.describe_execution(executionArn=execution_arn)
        status = str(found["status"])
        detail = found.get("error") or found.get("cause") or found.get("output") or ""
        return status, str(detail)
