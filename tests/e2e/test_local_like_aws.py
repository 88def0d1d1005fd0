"""End to end: the local stack answers the AWS CLI the way AWS does (issue 8, section 5).

A user copies the `export` lines of `image-cicd local status` into a shell and runs
`aws stepfunctions ...` against the local endpoint. These tests do exactly that: every
AWS call below is the AWS CLI (`aws` from the project's environment) in a subprocess
whose environment holds only those exports, and the project's own commands and the
console then read what it did.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.cli import ok
from support.stacks import wait_for

from image_cicd.aws.stack import DeployedStack
from image_cicd.local.stack import LocalStack

AWS = str(Path(sys.executable).with_name("aws"))
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    params = {"Repositories": "repo-1,repo-2"}
    with LocalStack(tmp_path_factory.mktemp("like-aws"), parameters=params) as running:
        yield running


def exports(stack: LocalStack) -> dict[str, str]:
    """The variables `local status` tells the user to export, parsed as a shell would."""
    found = {}
    for line in ok(stack, "local", "status").splitlines():
        if line.startswith("export "):
            [assignment] = shlex.split(line[len("export ") :])
            name, _, value = assignment.partition("=")
            found[name] = value
    return found


@pytest.fixture(scope="module")
def shell_env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A user's shell after the exports: nothing else of AWS's, and another region's
    profile configured (the case where the CLI silently lists nothing)."""
    home = tmp_path_factory.mktemp("home")
    (home / "config").write_text("[default]\nregion = eu-west-3\n")
    (home / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }
    return env | exports(stack)


def aws(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [AWS, *args, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def aws_json(env: dict[str, str], *args: str) -> Any:
    out = aws(env, *args).stdout
    return json.loads(out) if out.strip() else {}


def wait_status(env: dict[str, str], arn: str, timeout: float = 120) -> dict[str, Any]:
    """describe-execution until the execution has ended."""
    deadline = time.monotonic() + timeout
    while True:
        desc: dict[str, Any] = aws_json(
            env, "stepfunctions", "describe-execution", "--execution-arn", arn
        )
        if desc["status"] != "RUNNING" or time.monotonic() > deadline:
            return desc
        time.sleep(0.2)


def waiting_promotion(
    stack: LocalStack, t: DeployedStack, env: dict[str, str], repository: str
) -> tuple[str, str]:
    """Push DEV `repository`:latest and start its promotion with the AWS CLI, unnamed;
    (execution name, ARN) once it waits for its TEST approval."""
    pushed = json.loads(
        ok(stack, "push", f"ecr-dev/{repository}:latest", "--size", "200KB", "--json")
    )
    document = json.dumps({"repository": f"ecr-dev/{repository}", "digest": pushed["digest"]})
    arn = aws_json(
        env,
        "stepfunctions",
        "start-execution",
        "--state-machine-arn",
        t.promotion_arn,
        "--input",
        document,
    )["executionArn"]
    name = arn.rsplit(":", 1)[1]
    assert UUID.match(name)
    wait_for(
        lambda: any(a.execution == name for a in t.ledger.list_approvals("PENDING")),
        f"the TEST approval of {name}",
    )
    return name, arn


def history(env: dict[str, str], arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = aws_json(
        env, "stepfunctions", "get-execution-history", "--execution-arn", arn
    )["events"]
    return events


# ---------------------------------------------------------------------------------


def test_status_prints_the_exports_the_aws_cli_needs(stack: LocalStack, t: DeployedStack) -> None:
    found = exports(stack)

    assert found["AWS_ENDPOINT_URL"] == stack.info.aws_endpoint
    assert found["AWS_DEFAULT_REGION"] == found["AWS_REGION"] == "us-east-1"
    assert found["AWS_ACCESS_KEY_ID"]
    assert found["AWS_SECRET_ACCESS_KEY"]
    status = json.loads(ok(stack, "local", "status", "--json"))
    assert status["environment"] == found


def test_the_exports_reach_the_stack_from_a_shell_configured_for_another_region(
    stack: LocalStack, t: DeployedStack, shell_env: dict[str, str]
) -> None:
    machines = aws_json(shell_env, "stepfunctions", "list-state-machines")["stateMachines"]
    assert t.promotion_arn in [m["stateMachineArn"] for m in machines]
    without = {k: v for k, v in shell_env.items() if k not in exports(stack)}
    assert aws(without, "stepfunctions", "list-state-machines", check=False).returncode != 0


def test_unnamed_executions_get_a_uuid_and_odd_input_breaks_no_listing(
    stack: LocalStack, t: DeployedStack, shell_env: dict[str, str]
) -> None:
    started = []
    for machine in (t.promotion_arn, t.rollback_arn):
        for document in ("[]", "null", '"x"', "{}", "{}"):  # twice {}: two unnamed starts
            started.append(
                aws_json(
                    shell_env,
                    "stepfunctions",
                    "start-execution",
                    "--state-machine-arn",
                    machine,
                    "--input",
                    document,
                )["executionArn"]
            )
    names = [arn.rsplit(":", 1)[1] for arn in started]
    assert all(UUID.match(name) for name in names), names
    assert len(set(names)) == len(names)
    for arn in started:
        assert wait_status(shell_env, arn)["status"] == "FAILED"  # none of these inputs is valid

    listed = {e["name"]: e for e in json.loads(ok(stack, "executions", "--json", "--limit", "50"))}
    assert set(names) <= set(listed)
    for name in names:
        shown = json.loads(ok(stack, "show", name, "--json"))
        assert (shown["name"], shown["status"]) == (name, "FAILED")
        page = requests.get(f"{stack.info.console_url}executions/{name}", timeout=30)
        assert page.status_code == 200, page.text
    front = requests.get(stack.info.console_url, timeout=30)
    assert front.status_code == 200, front.text
    assert all(name in front.text for name in names)
    assert "execution" in ok(stack, "executions")


def test_stop_execution_aborts_it_and_the_ledger_and_console_say_so(
    stack: LocalStack, t: DeployedStack, shell_env: dict[str, str]
) -> None:
    name, arn = waiting_promotion(stack, t, shell_env, "repo-1")
    [approval] = [a for a in t.ledger.list_approvals("PENDING") if a.execution == name]

    aws(
        shell_env,
        "stepfunctions",
        "stop-execution",
        "--execution-arn",
        arn,
        "--error",
        "Operator.Stop",
        "--cause",
        "stopped by hand",
    )

    desc = wait_status(shell_env, arn)
    assert (desc["status"], desc.get("error"), desc.get("cause")) == (
        "ABORTED",
        "Operator.Stop",
        "stopped by hand",
    )
    assert history(shell_env, arn)[-1]["type"] == "ExecutionAborted"
    # The approval's task token is closed: a late decision is refused as on AWS.
    late = aws(
        shell_env,
        "stepfunctions",
        "send-task-success",
        "--task-token",
        approval.task_token.get_secret_value(),
        "--task-output",
        "{}",
        check=False,
    )
    assert late.returncode != 0
    assert "TaskTimedOut" in late.stderr
    late = aws(
        shell_env,
        "stepfunctions",
        "send-task-failure",
        "--task-token",
        approval.task_token.get_secret_value(),
        "--error",
        "ApprovalRejected",
        check=False,
    )
    assert "TaskTimedOut" in late.stderr
    # No state ran after the stop (on AWS, Catch does not run for a stopped execution),
    events = history(shell_env, arn)
    assert events[-1]["type"] == "ExecutionAborted"
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e
    ]
    assert entered[-1] == "Wait for TEST approval"  # neither the next state nor a Catch
    # ... and the status-change rule's function recorded the end in the ledger.
    promotion = wait_for(
        lambda: (p := t.ledger.get_promotion(name)).outcome != "RUNNING" and p, "the ledger"
    )
    assert promotion.outcome == "ABORTED"
    assert "stopped by hand" in (promotion.reason or "")
    assert t.ledger.get_approval(approval.approval_id).status == "EXPIRED"
    # The interpreter ran nothing after the stop (its history would not show it):
    assert stack.aws is not None
    copy_log = stack.aws.lambda_log_dir / "image-cicd-RetagAndCopyManifestFunction.log"
    assert not copy_log.exists() or name not in copy_log.read_text()
    assert promotion.test_version is None
    message = wait_for(
        lambda: [m for m in stack.inbox.messages() if name in m["message"]], "a notification"
    )
    assert "aborted" in message[-1]["subject"]
    shown = json.loads(ok(stack, "show", name, "--json"))
    assert (shown["status"], shown["approval_link"]) == ("ABORTED", None)
    page = requests.get(f"{stack.info.console_url}executions/{name}", timeout=30).text
    assert "ABORTED" in page
    assert "stopped by hand" in page
    front = requests.get(stack.info.console_url, timeout=30).text
    assert re.search(rf"{name}.*?ABORTED", front, re.S)


def test_a_rejections_cause_reaches_the_execution_console_and_notification(
    stack: LocalStack, t: DeployedStack, shell_env: dict[str, str]
) -> None:
    name, arn = waiting_promotion(stack, t, shell_env, "repo-2")

    ok(stack, "approve", name, "--reject", "--as", "cy@example.com", "--comment", "not today")

    desc = wait_status(shell_env, arn)
    cause = "TEST rejected by cy@example.com: not today"
    assert (desc["status"], desc["error"], desc["cause"]) == ("FAILED", "ApprovalRejected", cause)
    failed = next(e for e in history(shell_env, arn) if e["type"] == "TaskFailed")
    assert failed["taskFailedEventDetails"]["cause"] == cause
    shown = json.loads(ok(stack, "show", name, "--json"))
    assert shown["cause"] == cause
    promotion = t.ledger.get_promotion(name)
    assert (promotion.outcome, promotion.reason) == ("REJECTED", f"ApprovalRejected: {cause}")
    page = requests.get(f"{stack.info.console_url}executions/{name}", timeout=30).text
    assert "TEST rejected by cy@example.com: not today" in page
    [message] = [m for m in stack.inbox.messages() if f"Promotion {name}" in m["message"]]
    assert f"Reason: ApprovalRejected: {cause}" in message["message"]
