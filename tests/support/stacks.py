"""The embedded stack for the tests that run whole workflows, and what they do with it:
push an image to DEV, read a stage, name an execution."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from image_cicd.aws.stack import DeployedStack
from image_cicd.aws.stepfunctions import execution_arn_for
from image_cicd.local.stack import LocalStack
from image_cicd.promotion.versions import VersionScheme, read_stage
from image_cicd.registry.synthetic import SyntheticImage, build_image, push_image

from .ecr_registry import EcrProxy


@contextmanager
def local_stack(
    directory: Path, parameters: dict[str, str], flavour: str = "plain"
) -> Iterator[LocalStack]:
    """A running LocalStack; its functions reach the plain registry, or (``flavour``
    "ecr") an ECR-flavoured proxy in front of it (BLOB_MOUNTING off, as on a new
    account)."""
    fronts: list[EcrProxy] = []

    def ecr_front(url: str) -> str:
        fronts.append(EcrProxy(url).start())
        return fronts[-1].url

    try:
        with LocalStack(
            directory,
            parameters=parameters,
            registry_front=ecr_front if flavour == "ecr" else None,
        ) as running:
            yield running
    finally:
        for front in fronts:
            front.stop()


def push(t: DeployedStack, name: str, **options: Any) -> SyntheticImage:
    """A small synthetic image pushed to DEV's ``name`` as ``candidate``."""
    image = build_image(layers=2, layer_size=30_000, **options)
    push_image(t.registry, f"ecr-dev/{name}", image, tags=["candidate"])
    return image


def stage(t: DeployedStack, repository: str) -> tuple[dict[str, str], str | None]:
    """A stage repository's versions (tag -> digest) and the digest of its latest."""
    state = read_stage(t.registry, repository, VersionScheme())
    return state.versions, state.latest


def arn_of(t: DeployedStack, execution: str) -> str:
    """The ARN of the promotion execution named ``execution``."""
    return execution_arn_for(t.promotion_arn, execution)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """The first true answer of ``check()``, asked every 0.2 s; fails naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
