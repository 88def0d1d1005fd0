"""Shared fixtures: real docker-registry servers, a token server, a fault proxy, an
ECR-flavoured proxy."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import BasicRegistry, TokenRegistry
from support.ecr_registry import EcrProxy
from support.token_server import TokenServer

from image_cicd.aws.stack import DeployedStack
from image_cicd.local.fault_proxy import FaultProxy
from image_cicd.local.registry import RegistryServer, TokenAuth
from image_cicd.local.stack import LocalStack, deployed_stack

USERNAME = "ci-user"
PASSWORD = "ci-password-1"


def _descendants() -> list[tuple[int, str]]:
    """(pid, command line) of live processes started, directly or not, by this one."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, ...
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if state != "Z":
            parents[int(entry.name)] = int(ppid)
            commands[int(entry.name)] = cmdline.strip()
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - mine
        mine |= frontier
    return sorted((pid, commands[pid]) for pid in mine)


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_running() -> Iterator[None]:
    """Registries, moto servers and Lambda workers started by tests must all be gone."""
    yield
    leftovers = [
        (pid, cmd)
        for pid, cmd in _descendants()
        if "docker-registry" in cmd or "image_cicd" in cmd or "lambda_worker" in cmd
    ]
    for pid, _ in leftovers:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    if leftovers:
        pytest.fail(
            f"processes started by the tests were still running at session end (killed now): "
            f"{leftovers}",
            pytrace=False,
        )


@pytest.fixture(scope="module", params=["plain", "ecr"])
def flavour(request: pytest.FixtureRequest) -> str:
    """For a module's ``stack`` (support.stacks.local_stack): its functions reach the
    plain registry, or an ECR-flavoured proxy in front of it; the module runs with each."""
    return str(request.param)


@pytest.fixture(scope="module")
def t(stack: LocalStack) -> DeployedStack:
    """The module's ``stack`` fixture, as a deployed stack (as from CloudFormation)."""
    return deployed_stack(stack.info)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A fresh anonymous registry."""
    with RegistryServer(tmp_path / "registry") as server:
        yield server


@pytest.fixture
def registry_pair(tmp_path: Path) -> Iterator[tuple[RegistryServer, RegistryServer]]:
    """Two independent anonymous registries."""
    with (
        RegistryServer(tmp_path / "registry-a") as first,
        RegistryServer(tmp_path / "registry-b") as second,
    ):
        yield first, second


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[BasicRegistry]:
    """A registry with Basic auth for one user."""
    with RegistryServer(tmp_path / "registry", users={USERNAME: PASSWORD}) as server:
        yield BasicRegistry(server, USERNAME, PASSWORD)


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[TokenRegistry]:
    """A registry with Bearer token auth, and the token server that issues its tokens."""
    with TokenServer({USERNAME: PASSWORD}) as token_server:
        bundle = token_server.write_rootcertbundle(tmp_path / "token-root.pem")
        auth = TokenAuth(token_server.realm, token_server.service, token_server.issuer, bundle)
        with RegistryServer(tmp_path / "registry", token_auth=auth) as server:
            yield TokenRegistry(server, token_server, USERNAME, PASSWORD)


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Factory: ``fault_proxy(upstream_url, fault_rate=..., kinds=..., seed=...)``."""
    started: list[FaultProxy] = []

    def make(upstream: str, **options: Any) -> FaultProxy:
        proxy = FaultProxy(upstream, **options).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture
def ecr_proxy() -> Iterator[Callable[..., EcrProxy]]:
    """Factory: ``ecr_proxy(upstream_url, blob_mounting=..., auth=..., ...)``, an
    ECR-flavoured front of an anonymous registry (see support/ecr_registry.py)."""
    started: list[EcrProxy] = []

    def make(upstream: str, **options: Any) -> EcrProxy:
        proxy = EcrProxy(upstream, **options).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()
