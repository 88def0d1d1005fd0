"""What every command shares: the stack it works on (`Context`), the handling of known
errors (`friendly_errors`) and the terminal output helpers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from image_cicd.aws.stack import DeployedStack

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Known failures end with one clear line and exit status 1, not a traceback.

    The error classes are imported only when something failed: importing them up
    front would load boto3 into every command.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, click.ClickException) or not _known_error(exc):
                raise
            raise click.ClickException(str(exc) or type(exc).__name__) from exc

    return wrapper  # type: ignore[return-value]


def _known_error(exc: Exception) -> bool:
    # An AWS endpoint or registry that cannot be reached (moto has died, no network),
    # or an AWS error answer: the message says which endpoint and what it answered.
    from botocore.exceptions import BotoCoreError, ClientError
    from requests.exceptions import ConnectionError as HttpConnectionError

    from image_cicd.aws.operations import OperatorError
    from image_cicd.aws.stack import StackError
    from image_cicd.ledger.store import LedgerError
    from image_cicd.local.aws import LocalAwsError
    from image_cicd.local.deployer import DeployError
    from image_cicd.local.registry import RegistryError as RegistryStartError
    from image_cicd.local.stack import StackRunning
    from image_cicd.promotion.errors import USER_ERRORS

    local = (DeployError, LocalAwsError, RegistryStartError, StackRunning)
    unreachable = (BotoCoreError, ClientError, HttpConnectionError)
    known = (*USER_ERRORS, LedgerError, OperatorError, StackError, *local, *unreachable)
    return isinstance(exc, known)


class Context:
    """Finds the stack the commands work on, once per command."""

    def __init__(self, stack_name: str | None, state_dir: Path | None) -> None:
        self.stack_name = stack_name
        self.state_dir = state_dir
        self._target: DeployedStack | None = None

    @property
    def stack(self) -> DeployedStack:
        if self._target is None:
            if self.stack_name:
                from image_cicd.aws.stack import from_cloudformation

                self._target = from_cloudformation(self.stack_name)
            else:
                from image_cicd.aws.stack import StackError
                from image_cicd.local.stack import deployed_stack, running_stack

                info = running_stack(self.state_dir)
                if info is None:
                    raise StackError(
                        "no local stack is running: start one with `image-cicd local up`, "
                        "or name a stack on AWS with --stack NAME"
                    )
                self._target = deployed_stack(info)
        return self._target


pass_context = click.make_pass_decorator(Context)


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def short_digest(digest: str | None) -> str:
    return digest[7:19] if digest else "-"


# -- local stack -----------------------------------------------------------------------
