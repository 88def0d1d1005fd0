"""Run the mock-config test cases on the AWS Step Functions Local engine (needs Docker).

Step Functions Local reads tests/sfn_local/MockConfigFile.json; an execution started as
``<state machine arn>#<TestCase>`` answers every Task from the test case's mocks.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sfn_cases import EXPECTED, INPUTS, MOCK_CONFIG, Outcome, definition

IMAGE = "amazon/aws-stepfunctions-local"
REGION = "us-east-1"
ACCOUNT = "123456789012"


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=20, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not _docker_answers(), reason="needs a Docker engine"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def substituted(machine: str) -> str:
    """The definition with every ${...} replaced the way DefinitionSubstitutions would."""
    text = json.dumps(definition(machine))

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.endswith("FunctionArn"):
            function = name.removesuffix("Arn")
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"
        if name.endswith("TopicArn"):
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{name.removesuffix('Arn')}"
        if name == "TestTimeoutSeconds":
            return "3600"
        raise AssertionError(f"no local value for ${{{name}}}")

    return re.sub(r"\$\{([A-Za-z0-9]+)\}", value, text)


@pytest.fixture(scope="module")
def sfn() -> Iterator[Any]:
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    name = f"sfn-local-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            "docker", "run", "-d", "--rm", "--name", name,
            "-p", f"127.0.0.1:{port}:8083",
            "-v", f"{MOCK_CONFIG}:/home/StepFunctionsLocal/MockConfigFile.json:ro",
            "-e", "SFN_MOCK_CONFIG=/home/StepFunctionsLocal/MockConfigFile.json",
            IMAGE,
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )  # fmt: skip
    try:
        client = boto3.client(
            "stepfunctions",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_state_machines()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield client
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def machines(sfn: Any) -> dict[str, str]:
    arns: dict[str, str] = {}
    for machine in EXPECTED:
        response = sfn.create_state_machine(
            name=machine,
            definition=substituted(machine),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/DummyRole",
        )
        arns[machine] = response["stateMachineArn"]
    return arns


CASES = [(machine, case) for machine, cases in EXPECTED.items() for case in cases]


@pytest.mark.parametrize(("machine", "case"), CASES)
def test_case_ends_as_expected(sfn: Any, machines: dict[str, str], machine: str, case: str) -> None:
    # Given the state machine and one of its mock test cases
    arn = f"{machines[machine]}#{case}"
    # When an execution of the test case runs
    execution = sfn.start_execution(
        stateMachineArn=arn,
        name=f"{case}-{uuid.uuid4().hex[:8]}",
        input=json.dumps(INPUTS[machine]),
    )["executionArn"]
    deadline = time.monotonic() + 120
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"{case} still running"
        time.sleep(0.5)
    # Then it ends in the expected state with the expected error
    expected: Outcome = EXPECTED[machine][case]
    events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert described["status"] == expected.status, entered
    assert entered[-1] == expected.last_state
    if expected.error is not None:
        failed = next(e for e in events if e["type"] == "ExecutionFailed")
        assert failed["executionFailedEventDetails"]["error"] == expected.error
