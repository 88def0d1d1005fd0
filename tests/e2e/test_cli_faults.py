"""End to end: the `image-cicd` command under bad input and when parts of the local
stack have died. Each failure is one clear line and a non-zero exit, never a
traceback, and nothing from outside is read as Rich markup.

The stacks run in this process (registry and moto as child processes), found by the
commands through their state files as after `image-cicd local up`; the faults are
real: the moto server or the registry process is killed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from image_cicd.aws.operations import pending_approval, start_promotion
from image_cicd.aws.stepfunctions import execution_arn_for
from image_cicd.cli.main import main
from image_cicd.local.stack import LocalStack, deployed_stack
from image_cicd.registry.synthetic import build_image, push_image


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("faults"), parameters={"Repositories": "repo-1"}) as s:
        yield s


@pytest.fixture
def doomed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of its own, for one test to kill a part of."""
    with LocalStack(tmp_path_factory.mktemp("doomed"), parameters={"Repositories": "repo-1"}) as s:
        yield s


def cli(stack: LocalStack, *args: str) -> Result:
    return CliRunner().invoke(main, ["--state-dir", str(stack.state_dir), *args])


def one_clear_line(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert message in result.output, result.output


def kill(pid: int | None) -> None:
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
            os.kill(pid, 0)
        except (ChildProcessError, ProcessLookupError):
            return
        time.sleep(0.05)


def test_bad_options_are_one_clear_line(stack: LocalStack) -> None:
    arn = execution_arn_for(deployed_stack(stack.info).promotion_arn, "nope")
    for args, message in [
        (("push", "ecr-dev/repo-1", "--platforms", ""), "name at least one platform"),
        (("push", "ecr-dev/repo-1", "--platforms", " , "), "name at least one platform"),
        (("push", "ecr-dev/repo-1", "--size", "1e30"), "no registry takes a layer over"),
        (("push", "ecr-dev/repo-1", "--size", "inf"), "use a size like"),
        (("push", "ecr-dev/repo-1", "--size", "nan"), "use a size like"),
        (("show", arn), "no execution named"),
        (("show", "arn:aws:states:us-east-1:123456789012:execution:x"), "no execution named"),
        (("executions", "--limit", "-1"), "-1 is not in the range 1<=x<=1000"),
        (("executions", "--limit", "0"), "0 is not in the range"),
    ]:
        result = cli(stack, *args)
        assert result.exit_code != 0, (args, result.output)
        assert "Traceback" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args,
            repr(result.exception),
        )
        assert message in result.output, (args, result.output)


def test_show_prints_a_rejection_comment_as_plain_text(stack: LocalStack) -> None:
    t = deployed_stack(stack.info)
    image = build_image(layers=1, layer_size=1001)
    push_image(t.registry, "ecr-dev/repo-1", image, tags=["candidate"])
    execution = start_promotion(t, "ecr-dev/repo-1", image.digest).rsplit(":", 1)[-1]
    assert pending_approval(t, execution, wait_seconds=120) is not None
    comment = "[/] no: [bold red]X[/bold red] \\[dim]"
    rejected = cli(stack, "approve", execution, "--reject", "--as", "cy", "--comment", comment)
    assert rejected.exit_code == 0, rejected.output
    deadline = time.monotonic() + 120
    while json.loads(cli(stack, "show", execution, "--json").output)["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    shown = cli(stack, "show", execution)

    assert shown.exit_code == 0, (shown.output, repr(shown.exception))
    assert "ApprovalRejected" in shown.output
    assert comment in shown.output


def test_when_moto_has_died_every_command_says_so(doomed: LocalStack) -> None:
    assert cli(doomed, "local", "status").exit_code == 0
    assert doomed.aws is not None
    kill(doomed.aws.pid)

    status = cli(doomed, "local", "status")
    one_clear_line(status, "moto is down")
    assert "registry is down" not in status.output
    assert json.loads(cli(doomed, "local", "status", "--json").output)["down"].keys() == {"moto"}
    for args in (
        ("executions",),
        ("approve", "some-execution", "--as", "x", "--wait", "0"),
        ("show", "some-execution"),
    ):
        result = cli(doomed, *args)
        one_clear_line(result, "Could not connect to the endpoint URL")
        assert "no execution named" not in result.output


def test_status_names_a_dead_registry_and_a_stopped_server(doomed: LocalStack) -> None:
    assert doomed.registry is not None
    assert doomed.server is not None
    kill(doomed.registry.pid)
    one_clear_line(cli(doomed, "local", "status"), "registry is down")

    doomed.server.stop()
    status = cli(doomed, "local", "status")
    one_clear_line(status, "server is down")
    assert "moto is down" not in status.output
