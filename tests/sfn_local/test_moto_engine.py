"""Run the mock-config test cases on moto's ASL interpreter (the local stack's engine).

No Docker needed: moto executes the real definitions; every Lambda invocation is
answered from tests/sfn_local/MockConfigFile.json (the state is recognised from the
function and its payload), callback tasks are answered with SendTaskSuccess /
SendTaskFailure, and an expired approval is a real TimeoutSecondsPath timeout.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.awslambda_simple.models import LambdaSimpleBackend
from sfn_cases import EXPECTED, INPUTS, Outcome, definition, mock_config
from support.aws import REGION, moto_aws

ACCOUNT = "123456789012"
APPROVAL_TIMEOUT_SECONDS = 2  # the plan's approval timeout in these runs
FUNCTIONS = [
    "ResolveRepoFunction",
    "WaitForApprovalFunction",
    "RetagAndCopyManifestFunction",
    "RunTestsFunction",
    "PromoteToProdFunction",
    "NotifyFunction",
    "RollbackFunction",
]


def state_of(function: str, payload: dict[str, Any]) -> str:
    """Which state invoked the function (from the payload contract)."""
    names = {
        "ResolveRepoFunction": "Resolve repository",
        "RetagAndCopyManifestFunction": "Copy to TEST",
        "PromoteToProdFunction": "Promote to PROD",
        "RollbackFunction": "Roll back PROD",
    }
    if function in names:
        return names[function]
    if function == "WaitForApprovalFunction":
        return f"Wait for {payload['stage']} approval"
    if function == "RunTestsFunction":
        return "Run tests" if payload["action"] == "start" else "Check tests"
    if function == "NotifyFunction":
        if payload["outcome"] != "SUCCEEDED":
            return "Notify failure"
        return "Notify success" if payload["workflow"] == "PROMOTION" else "Notify rollback"
    raise AssertionError(f"unexpected function {function}")


class Responder:
    """Answers Lambda invocations of one execution from its test case."""

    def __init__(self, sfn: Any, machine: str, case: str) -> None:
        config = mock_config()
        self.sfn = sfn
        self.mocks: dict[str, str] = config["StateMachines"][machine]["TestCases"][case]
        self.responses: dict[str, dict[str, Any]] = config["MockedResponses"]
        self.calls: dict[str, int] = defaultdict(int)

    def response(self, state: str) -> dict[str, Any]:
        index = self.calls[state]
        self.calls[state] += 1
        for key, response in self.responses[self.mocks[state]].items():
            low, _, high = key.partition("-")
            if int(low) <= index <= int(high or low):
                assert isinstance(response, dict)
                return response
        raise AssertionError(f"{state}: no mocked response for invocation {index}")

    def invoke(self, function_name: str, body: Any, response_headers: dict[str, str]) -> bytes:
        function = function_name.rsplit(":", 1)[-1]
        payload = json.loads(body)
        state = state_of(function, payload)
        response = self.response(state)
        if "task_token" in payload:
            self._answer_callback(payload["task_token"], response)
            return b"{}"
        if "Throw" in response:
            response_headers["x-amz-function-error"] = "Unhandled"
            error = {
                "errorType": response["Throw"]["Error"],
                "errorMessage": response["Throw"].get("Cause", ""),
            }
            return json.dumps(error).encode()
        result = response["Return"]["Payload"]
        if state == "Resolve repository":
            result = {**result, "approval_timeout_seconds": APPROVAL_TIMEOUT_SECONDS}
        return json.dumps(result).encode()

    def _answer_callback(self, token: str, response: dict[str, Any]) -> None:
        if response.get("Throw", {}).get("Error") == "States.Timeout":
            return  # nobody decides: the task's TimeoutSecondsPath expires

        def answer() -> None:
            time.sleep(0.3)  # after the interpreter started waiting for the token
            if "Return" in response:
                self.sfn.send_task_success(taskToken=token, output=json.dumps(response["Return"]))
            else:
                self.sfn.send_task_failure(
                    taskToken=token,
                    error=response["Throw"]["Error"],
                    cause=response["Throw"].get("Cause", ""),
                )

        threading.Thread(target=answer, daemon=True).start()


CURRENT: dict[str, Responder] = {}


def _invoke(
    self: Any,
    function_name: str,
    qualifier: str | None,
    body: Any,
    headers: Any,
    response_headers: Any,
) -> bytes:
    return CURRENT["responder"].invoke(function_name, body, response_headers)


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    config = {
        "stepfunctions": {"execute_state_machine": True},
        "lambda": {"use_docker": False},
    }
    with pytest.MonkeyPatch.context() as patch, moto_aws(patch, config=config):
        patch.setattr(LambdaSimpleBackend, "invoke", _invoke)
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(
            RoleName="machine",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)
        arns = {}
        for function in FUNCTIONS:
            arns[f"{function}Arn"] = lam.create_function(
                FunctionName=function,
                Runtime="python3.12",
                Role=role,
                Handler="app.lambda_handler",
                Code={"ZipFile": b"not used"},
            )["FunctionArn"]
        sns = boto3.client("sns", region_name=REGION)
        arns["NotificationsTopicArn"] = sns.create_topic(Name="notifications")["TopicArn"]
        arns["TestTimeoutSeconds"] = "3600"
        sfn = boto3.client("stepfunctions", region_name=REGION)
        machines = {}
        for machine in EXPECTED:
            text = json.dumps(definition(machine))
            text = re.sub(r"\$\{([A-Za-z0-9]+)\}", lambda m: arns[m.group(1)], text)
            machines[machine] = sfn.create_state_machine(
                name=machine, definition=text, roleArn=role
            )["stateMachineArn"]
        yield {"sfn": sfn, "machines": machines}


CASES = [(machine, case) for machine, cases in EXPECTED.items() for case in cases]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("machine", "case"), CASES)
def test_case_runs_on_motos_interpreter(aws: dict[str, Any], machine: str, case: str) -> None:
    sfn = aws["sfn"]
    # Given the test case's answers
    CURRENT["responder"] = Responder(sfn, machine, case)
    # When an execution runs (always with a name: moto names unnamed executions "None")
    execution = sfn.start_execution(
        stateMachineArn=aws["machines"][machine],
        name=f"{case}-{uuid.uuid4().hex[:8]}",
        input=json.dumps(INPUTS[machine]),
    )["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{case} still running"
        time.sleep(0.2)
    # Then it ends where the test case says
    events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    expected: Outcome = EXPECTED[machine][case]
    assert described["status"] == expected.status, (entered, described)
    assert entered[-1] == expected.last_state, entered
    if expected.error is not None:
        failed = next(e for e in events if e["type"] == "ExecutionFailed")
        assert failed["executionFailedEventDetails"]["error"] == expected.error
    else:
        output = json.loads(described["output"])
        assert "failure" not in output
