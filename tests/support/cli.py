"""The `image-cicd` command run in-process (CliRunner) against an embedded stack."""

from __future__ import annotations

from click.testing import CliRunner, Result

from image_cicd.cli.main import main
from image_cicd.local.stack import LocalStack


def cli(stack: LocalStack, *args: str, input: str | None = None) -> Result:
    """`image-cicd --state-dir <the stack's> ARGS`; exceptions propagate (a traceback fails)."""
    return CliRunner().invoke(
        main, ["--state-dir", str(stack.state_dir), *args], input=input, catch_exceptions=False
    )


def ok(stack: LocalStack, *args: str) -> str:
    """The output of a command that must succeed."""
    result = cli(stack, *args)
    assert result.exit_code == 0, result.output
    return result.output
