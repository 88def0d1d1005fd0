"""The local Lambda runtime and the moto child process, with real handlers in real processes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from image_cicd.local.aws import LocalAws
from image_cicd.local.lambda_runtime import FunctionSpec, LocalLambdaRuntime

HANDLERS: dict[str, str] = {
    "env": """
        import os
        import helper  # from the layer

        def lambda_handler(event, context):
            print("log line from", context.function_name)
            keys = ["STAGE", "COLOR", "AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION", "AWS_ENDPOINT_URL"]
            return {
                "env": {k: os.environ.get(k) for k in keys},
                "event": event,
                "cwd": os.getcwd(),
                "layer": helper.NAME,
                "context": {
                    "function_name": context.function_name,
                    "aws_request_id": context.aws_request_id,
                    "memory_limit_in_mb": context.memory_limit_in_mb,
                    "invoked_function_arn": context.invoked_function_arn,
                    "remaining_ms": context.get_remaining_time_in_millis(),
                },
            }
    """,
    "boom": """
        class ImageNotFound(Exception):
            pass

        def lambda_handler(event, context):
            raise ImageNotFound(f"no image {event.get('image')}")
    """,
    "slow": """
        import subprocess, sys, time

        def lambda_handler(event, context):
            marker = event.get("marker")
            if marker:  # a grandchild that must die with the sandbox
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker])
            time.sleep(event.get("sleep", 60))
            return "finished"
    """,
    "flaky": """
        import os
        from pathlib import Path

        class RegistryBusy(Exception):
            pass

        def lambda_handler(event, context):
            counter = Path(os.environ["COUNTER_FILE"])
            n = int(counter.read_text()) + 1 if counter.exists() else 1
            counter.write_text(str(n))
            if n <= int(os.environ["FAILURES"]):
                raise RegistryBusy(f"attempt {n}")
            return {"digest": "sha256:" + "a" * 64, "image": event["image"], "attempts": n}
    """,
    "token": """
        import json, os

        def lambda_handler(event, context):
            with open(os.environ["TOKEN_FILE"], "w") as f:
                json.dump(event, f)
            return {"sent": True}
    """,
}


def _write_handlers(root: Path) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    for name, source in HANDLERS.items():
        d = root / "functions" / name
        d.mkdir(parents=True)
        (d / "app.py").write_text(textwrap.dedent(source))
        dirs[name] = d
    layer = root / "layer"
    layer.mkdir()
    (layer / "helper.py").write_text('NAME = "from-layer"\n')
    dirs["layer"] = layer
    return dirs


def _processes_mentioning(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _assert_no_processes(marker: str, wait: float = 3.0) -> None:
    deadline = time.monotonic() + wait
    while (left := _processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


# -- the runtime on its own -----------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    yield _write_handlers(tmp_path)
    _assert_no_processes(str(tmp_path))


def test_each_function_gets_its_own_environment_and_context(dirs: dict[str, Path]) -> None:
    runtime = LocalLambdaRuntime(endpoint_url="http://127.0.0.1:1", region="eu-west-1")
    results = {}
    for name, env in {"fn-a": {"STAGE": "DEV"}, "fn-b": {"COLOR": "blue"}}.items():
        spec = FunctionSpec(
            name, dirs["env"], layer_dirs=[dirs["layer"]], environment=env, memory_mb=256
        )
        result = runtime.invoke(spec, b'{"n": 1}', request_id=f"req-{name}")
        assert result.status_code == 200
        assert result.function_error is None
        results[name] = result

    a, b = results["fn-a"].json(), results["fn-b"].json()
    assert a["env"] == {
        "STAGE": "DEV",
        "COLOR": None,
        "AWS_LAMBDA_FUNCTION_NAME": "fn-a",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
    }
    assert b["env"]["STAGE"] is None
    assert b["env"]["COLOR"] == "blue"
    assert b["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "fn-b"
    assert a["event"] == {"n": 1}
    assert a["cwd"] == str(dirs["env"])
    assert a["layer"] == "from-layer"
    assert a["context"]["function_name"] == "fn-a"
    assert a["context"]["aws_request_id"] == "req-fn-a"
    assert a["context"]["memory_limit_in_mb"] == 256
    assert a["context"]["invoked_function_arn"].endswith(":function:fn-a")
    assert 0 < a["context"]["remaining_ms"] <= 3000
    # prints are logs, never part of the result
    assert "log line from fn-a" in results["fn-a"].log_tail
    assert "log line" not in results["fn-a"].payload.decode()


def test_exception_gives_lambda_error_shape(dirs: dict[str, Path]) -> None:
    result = LocalLambdaRuntime().invoke(FunctionSpec("boom", dirs["boom"]), b'{"image": "x"}')
    assert result.status_code == 200
    assert result.function_error == "Unhandled"
    body = result.json()
    assert body["errorType"] == "ImageNotFound"
    assert body["errorMessage"] == "no image x"
    assert any("lambda_handler" in frame for frame in body["stackTrace"])
    assert "ImageNotFound: no image x" in result.log_tail  # the traceback is logged


def test_timeout_kills_the_sandbox_and_its_children(dirs: dict[str, Path], tmp_path: Path) -> None:
    marker = f"{tmp_path}/grandchild-{uuid.uuid4().hex}"
    spec = FunctionSpec("slow", dirs["slow"], timeout_seconds=1)
    started = time.monotonic()
    result = LocalLambdaRuntime().invoke(spec, json.dumps({"marker": marker}).encode())
    elapsed = time.monotonic() - started
    assert elapsed >= spec.timeout_seconds  # it ran until the timeout, then was killed
    assert result.function_error == "Unhandled"
    body = result.json()
    assert body["errorType"] == "Sandbox.Timedout"
    assert body["errorMessage"].endswith(f"{result.request_id} Task timed out after 1.00 seconds")
    _assert_no_processes(marker, wait=1.0)


# -- through the moto child process -----------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAws, dict[str, Path]]]:
    root = tmp_path_factory.mktemp("stack")
    dirs = _write_handlers(root)
    common = {"TOKEN_FILE": str(root / "token.json"), "COUNTER_FILE": str(root / "count")}
    aws = LocalAws(root / "state")
    with aws:
        assert _processes_mentioning(str(root / "state"))  # the server is running
        specs = [
            FunctionSpec(
                "env-dev", dirs["env"], layer_dirs=[dirs["layer"]], environment={"STAGE": "DEV"}
            ),
            FunctionSpec(
                "env-prod", dirs["env"], layer_dirs=[dirs["layer"]], environment={"STAGE": "PROD"}
            ),
            FunctionSpec("boom", dirs["boom"]),
            FunctionSpec("flaky", dirs["flaky"], environment={**common, "FAILURES": "2"}),
            FunctionSpec("token", dirs["token"], environment=common),
            FunctionSpec("slow", dirs["slow"], timeout_seconds=1),
        ]
        for spec in specs:
            arn = aws.deploy_function(spec)
            assert arn == f"arn:aws:lambda:us-east-1:123456789012:function:{spec.name}"
        yield aws, dirs
    _assert_no_processes(str(root))


def _invoke(aws: LocalAws, name: str, event: Any) -> tuple[str | None, Any]:
    resp = aws.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event).encode())
    assert resp["StatusCode"] == 200
    return resp.get("FunctionError"), json.loads(resp["Payload"].read())


def test_boto3_invoke_runs_the_handler(stack: tuple[LocalAws, dict[str, Path]]) -> None:
    aws, _ = stack
    lam = aws.client("lambda")
    config = lam.get_function_configuration(FunctionName="env-prod")
    assert config["Environment"]["Variables"] == {"STAGE": "PROD"}

    error, dev = _invoke(aws, "env-dev", {"hello": "dev"})
    assert error is None
    assert dev["event"] == {"hello": "dev"}
    assert dev["env"]["STAGE"] == "DEV"
    assert dev["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "env-dev"
    assert dev["env"]["AWS_ENDPOINT_URL"] == aws.endpoint_url
    _, prod = _invoke(aws, "env-prod", {})
    assert prod["env"]["STAGE"] == "PROD"

    resp = lam.invoke(FunctionName="env-dev", Payload=b"{}", LogType="Tail")
    assert "log line from env-dev" in base64.b64decode(resp["LogResult"]).decode()
    assert (aws.lambda_log_dir / "env-dev.log").read_text().count("START RequestId") == 2

    resp = lam.invoke(FunctionName="env-dev", Payload=b"{}", InvocationType="Event")
    assert resp["StatusCode"] == 202


def test_boto3_invoke_errors(stack: tuple[LocalAws, dict[str, Path]]) -> None:
    aws, _ = stack
    error, body = _invoke(aws, "boom", {"image": "repo-1:v1"})
    assert error == "Unhandled"
    assert body["errorType"] == "ImageNotFound"
    assert body["errorMessage"] == "no image repo-1:v1"

    error, body = _invoke(aws, "slow", {"sleep": 30})
    assert error == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"

    with pytest.raises(ClientError) as info:
        aws.client("lambda").invoke(FunctionName="missing", Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"


STATE_MACHINE: dict[str, Any] = {
    "StartAt": "Resolve",
    "States": {
        "Resolve": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                "FunctionName": "flaky",
                "Payload": {"image.$": "$.image", "execution.$": "$$.Execution.Name"},
            },
            "ResultSelector": {"digest.$": "$.Payload.digest", "attempts.$": "$.Payload.attempts"},
            "ResultPath": "$.resolved",
            "Retry": [
                {
                    "ErrorEquals": ["RegistryBusy"],
                    "IntervalSeconds": 1,
                    "MaxAttempts": 3,
                    "BackoffRate": 1,
                }
            ],
            "Next": "Check",
        },
        "Check": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "boom", "Payload.$": "$"},
            "Catch": [
                {"ErrorEquals": ["ImageNotFound"], "ResultPath": "$.failure", "Next": "Approve"}
            ],
            "Next": "Approve",
        },
        "Approve": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {
                "FunctionName": "token",
                "Payload": {"token.$": "$$.Task.Token", "digest.$": "$.resolved.digest"},
            },
            "TimeoutSeconds": 60,
            "ResultPath": "$.approval",
            "Next": "Done",
        },
        "Done": {"Type": "Succeed"},
    },
}


def test_state_machine_runs_on_the_local_runtime(stack: tuple[LocalAws, dict[str, Path]]) -> None:
    aws, _ = stack
    token_file = Path(
        aws.client("lambda").get_function_configuration(FunctionName="token")["Environment"][
            "Variables"
        ]["TOKEN_FILE"]
    )
    sfn = aws.client("stepfunctions")
    machine = sfn.create_state_machine(
        name="promotion-test",
        definition=json.dumps(STATE_MACHINE),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    execution = sfn.start_execution(
        stateMachineArn=machine, name="run-1", input=json.dumps({"image": "repo-1:v1"})
    )["executionArn"]

    deadline = time.monotonic() + 60
    while not token_file.exists():
        assert time.monotonic() < deadline, "the approval task never ran"
        assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
        time.sleep(0.1)
    sent = json.loads(token_file.read_text())
    assert sent["digest"] == "sha256:" + "a" * 64
    sfn.send_task_success(taskToken=sent["token"], output=json.dumps({"approved_by": "alice"}))

    while (desc := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert desc["status"] == "SUCCEEDED"
    output = json.loads(desc["output"])
    assert output["image"] == "repo-1:v1"
    assert output["resolved"] == {"digest": "sha256:" + "a" * 64, "attempts": 3}
    assert output["failure"]["Error"] == "ImageNotFound"
    assert json.loads(output["failure"]["Cause"])["errorMessage"] == "no image repo-1:v1"
    assert output["approval"] == {"approved_by": "alice"}

    events = sfn.get_execution_history(executionArn=execution)["events"]
    entered = [
        e["stateEnteredEventDetails"]["name"] for e in events if e["type"].endswith("StateEntered")
    ]
    assert entered == ["Resolve", "Check", "Approve", "Done"]
    types = [e["type"] for e in events]
    assert types.count("TaskFailed") == 3  # two retried attempts and the caught one
    assert "TaskSubmitted" in types  # the waitForTaskToken invocation
    assert types[0] == "ExecutionStarted"
    assert types[-1] == "ExecutionSucceeded"
    failed = [e["taskFailedEventDetails"] for e in events if e["type"] == "TaskFailed"]
    assert [f["error"] for f in failed] == ["RegistryBusy", "RegistryBusy", "ImageNotFound"]


def test_stop_kills_running_invocations(tmp_path: Path) -> None:
    dirs = _write_handlers(tmp_path)
    with LocalAws(tmp_path / "state") as aws:
        aws.deploy_function(FunctionSpec("slow", dirs["slow"], timeout_seconds=600))
        aws.client("lambda").invoke(
            FunctionName="slow",
            InvocationType="Event",
            Payload=json.dumps({"marker": f"{tmp_path}/left-running"}).encode(),
        )
        deadline = time.monotonic() + 10
        while not _processes_mentioning(f"{tmp_path}/left-running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    _assert_no_processes(str(tmp_path))


def test_server_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    dirs = _write_handlers(tmp_path)
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from image_cicd.local.aws import LocalAws
        from image_cicd.local.lambda_runtime import FunctionSpec

        aws = LocalAws(Path({str(tmp_path / "state")!r})).start()
        aws.deploy_function(FunctionSpec("slow", Path({str(dirs["slow"])!r}), timeout_seconds=600))
        aws.client("lambda").invoke(
            FunctionName="slow", InvocationType="Event", Payload=json.dumps({{"sleep": 600}})
        )
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 10
        while not _processes_mentioning(str(dirs["slow"])):  # the invocation is running
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        parent.kill()  # no chance to clean up: the server must notice by itself
        parent.wait()
    _assert_no_processes(str(tmp_path), wait=5.0)


# -- the zygote: fast forks, yet nothing shared between invocations ------------------------------

STATEFUL = """
    import os
    import sys

    import boto3
    import requests

    CALLS = []

    def lambda_handler(event, context):
        CALLS.append(1)
        seen = {
            "calls": len(CALLS),
            "env": os.environ.get("LEAKED"),
            "module_attr": getattr(requests, "leaked", None),
            "default_session": boto3.DEFAULT_SESSION is not None,
            "requests_from": requests.__file__,
        }
        os.environ["LEAKED"] = "yes"
        requests.leaked = "yes"
        boto3.client("dynamodb")  # sets boto3.DEFAULT_SESSION
        if event.get("exit") is not None:
            sys.exit(event["exit"])
        if event.get("kill"):
            os.kill(os.getpid(), 9)
        return {"seen": seen, "pid": os.getpid(), "ppid": os.getppid()}
"""


@pytest.fixture
def stateful(tmp_path: Path) -> Iterator[Path]:
    code = tmp_path / "stateful"
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent(STATEFUL))
    yield code
    _assert_no_processes(str(tmp_path))


def _is_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_invocations_fork_from_one_zygote_and_share_nothing(stateful: Path) -> None:
    with LocalLambdaRuntime(endpoint_url="http://127.0.0.1:1") as runtime:
        spec = FunctionSpec("stateful", stateful, timeout_seconds=10)
        first, second = (runtime.invoke(spec, b"{}").json() for _ in range(2))
        zygote = runtime.zygote_pid
    assert zygote is not None
    assert first["ppid"] == second["ppid"] == zygote  # the same zygote forked both ...
    assert first["pid"] != second["pid"]  # ... into two processes
    fresh = {
        "calls": 1,
        "env": None,
        "module_attr": None,
        "default_session": False,
        "requests_from": first["seen"]["requests_from"],
    }
    assert first["seen"] == second["seen"] == fresh
    assert not _is_running(zygote)  # close() stopped it


def test_runtime_exits_have_lambdas_error_shape(stateful: Path) -> None:
    with LocalLambdaRuntime() as runtime:
        spec = FunctionSpec("stateful", stateful, timeout_seconds=10)
        exited = runtime.invoke(spec, b'{"exit": 2}')
        killed = runtime.invoke(spec, b'{"kill": true}')
        unparsable = runtime.invoke(spec, b"{not json")
        ok = runtime.invoke(spec, b"{}")
    for result in (exited, killed):
        assert result.function_error == "Unhandled"
        assert result.json()["errorType"] == "Runtime.ExitError"
    assert exited.json()["errorMessage"].endswith("Runtime exited with error: exit status 2")
    # As Lambda words it (the runtime is killed for its memory, or by a crash).
    assert killed.json()["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert unparsable.json()["errorType"] == "Runtime.UnmarshalError"
    assert ok.function_error is None  # the zygote survives its children's deaths


def test_a_layer_can_bring_its_own_copy_of_a_preloaded_package(
    stateful: Path, tmp_path: Path
) -> None:
    layer = tmp_path / "layer"
    (layer / "requests").mkdir(parents=True)
    (layer / "requests" / "__init__.py").write_text("leaked = None\n")
    with LocalLambdaRuntime() as runtime:
        plain = runtime.invoke(FunctionSpec("plain", stateful, timeout_seconds=10), b"{}")
        layered = runtime.invoke(
            FunctionSpec("layered", stateful, layer_dirs=[layer], timeout_seconds=10), b"{}"
        )
    assert "site-packages" in plain.json()["seen"]["requests_from"]
    assert layered.json()["seen"]["requests_from"] == str(layer / "requests" / "__init__.py")


def _zygotes_of(pid: int) -> list[str]:
    return _processes_mentioning(f"image_cicd.local.lambda_worker zygote runtime={pid}")


def test_no_zygote_or_sandbox_outlives_the_server(tmp_path: Path) -> None:
    dirs = _write_handlers(tmp_path)
    aws = LocalAws(tmp_path / "state").start()
    try:
        server = aws.pid
        assert server is not None
        aws.deploy_function(FunctionSpec("slow", dirs["slow"], timeout_seconds=600))
        assert _invoke(aws, "slow", {"sleep": 0})[1] == "finished"
        assert len(_zygotes_of(server)) == 1
        aws.stop()  # orderly
        _assert_no_processes(f"image_cicd.local.lambda_worker zygote runtime={server}")

        aws.start()  # a new server: nothing deployed
        server = aws.pid
        assert server is not None
        aws.deploy_function(FunctionSpec("slow", dirs["slow"], timeout_seconds=600))
        aws.client("lambda").invoke(
            FunctionName="slow", InvocationType="Event", Payload=json.dumps({"sleep": 600})
        )
        deadline = time.monotonic() + 10
        while not _processes_mentioning(str(dirs["slow"])):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(server, 9)  # no chance to clean up: the zygote must notice by itself
        _assert_no_processes(f"image_cicd.local.lambda_worker zygote runtime={server}")
        _assert_no_processes(str(dirs["slow"]))
    finally:
        aws.stop()
    _assert_no_processes(str(tmp_path))
