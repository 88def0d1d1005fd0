"""The embedded stack: the registry, moto with its ASL interpreter and the local
Lambda runtime, the template deployed onto them, the trigger path and the HTTP
server (approvals, inbox, console) — all on loopback, state in one directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from image_cicd.aws.stack import DeployedStack
from image_cicd.console.app import Console
from image_cicd.console.inbox import Inbox
from image_cicd.local.aws import LocalAws
from image_cicd.local.deployer import REGION, Deployment, deploy
from image_cicd.local.registry import NotificationEndpoint, RegistryServer
from image_cicd.local.server import HOOK_HEADER, StackServer
from image_cicd.local.service import Service
from image_cicd.local.trigger import PipelineRun, PipelineRunner, deliver
from image_cicd.registry.client import RegistryClient

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[3]
STATE_FILE = "stack.json"
LOCAL_CREDENTIALS = ("local", "local")  # access key id, secret: moto accepts any


def default_state_dir() -> Path:
    return Path(os.environ.get("IMAGE_CICD_STATE_DIR") or PROJECT_DIR / ".image-cicd")


class StackRunning(RuntimeError):
    pass


@dataclass(frozen=True)
class StackInfo:
    """What `local status` and the CLI read about a running stack (from stack.json)."""

    pid: int
    state_dir: str
    registry_url: str
    aws_endpoint: str
    console_url: str
    stack_name: str
    outputs: dict[str, str]

    @property
    def registry_host(self) -> str:
        return self.registry_url.split("://", 1)[1]

    @property
    def environment(self) -> dict[str, str]:
        """What an AWS CLI or SDK needs to reach this stack (moto accepts any key)."""
        return {
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS[0],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS[1],
        }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")


def running_stack(state_dir: Path | None = None) -> StackInfo | None:
    """The stack recorded in `state_dir`, if its process is alive."""
    path = (state_dir or default_state_dir()) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    info = StackInfo(**{k: data[k] for k in StackInfo.__dataclass_fields__})
    return info if _alive(info.pid) else None


def down_parts(info: StackInfo, timeout: float = 3.0) -> dict[str, str]:
    """The parts of a running stack that do not answer: part name -> what went wrong.

    The registry must answer its API root (`/v2/`), the AWS endpoint (moto) a Step
    Functions call, the stack's own server (approvals, console, hooks) any request.
    """
    import boto3
    import requests
    from botocore.config import Config

    down: dict[str, str] = {}
    try:
        answer = requests.get(info.registry_url + "/v2/", timeout=timeout)
        if answer.status_code not in (200, 401):
            down["registry"] = f"{info.registry_url}/v2/ answered {answer.status_code}"
    except requests.RequestException as exc:
        down["registry"] = f"{info.registry_url} does not answer ({type(exc).__name__})"
    try:
        sfn = boto3.client(
            "stepfunctions",
            endpoint_url=info.aws_endpoint,
            region_name=REGION,
            aws_access_key_id=LOCAL_CREDENTIALS[0],
            aws_secret_access_key=LOCAL_CREDENTIALS[1],
            config=Config(
                connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1}
            ),
        )
        sfn.list_state_machines(maxResults=1)
    except Exception as exc:  # any failure means the AWS endpoint cannot serve the stack
        down["moto"] = (
            f"the AWS endpoint {info.aws_endpoint} does not answer ({type(exc).__name__})"
        )
    try:
        requests.get(info.console_url + "_events/", timeout=timeout)  # any answer will do
    except requests.RequestException as exc:
        down["server"] = (
            f"the stack server {info.console_url} does not answer ({type(exc).__name__})"
        )
    return down


class LocalStack(Service):
    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        project_dir: Path = PROJECT_DIR,
        parameters: Mapping[str, Any] | None = None,
        stack_name: str = "image-cicd",
        http_port: int = 0,
        registry_port: int = 0,
        registry_front: Callable[[str], str] | None = None,
        aws_port: int = 0,
        on_run: Callable[[PipelineRun], None] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.project_dir = project_dir
        self.parameters = dict(parameters or {})
        self.stack_name = stack_name
        self.on_run = on_run
        self.registry_front = registry_front
        self._ports = (http_port, registry_port, aws_port)
        self._hook_secret = secrets.token_urlsafe(32)
        self.server: StackServer | None = None
        self.registry: RegistryServer | None = None
        self.aws: LocalAws | None = None
        self.runner: PipelineRunner | None = None
        self.deployment: Deployment | None = None
        self.inbox = Inbox(self.state_dir / "inbox.jsonl", on_add=on_message)

    def start(self) -> Self:
        other = running_stack(self.state_dir)
        if other is not None and other.pid != os.getpid():
            raise StackRunning(
                f"a local stack is already running (pid {other.pid}, console {other.console_url});"
                f" stop it with `image-cicd local down`"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("inbox.jsonl", STATE_FILE):
            (self.state_dir / stale).unlink(missing_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        http_port, registry_port, aws_port = self._ports
        self.server = StackServer(
            lambda_client=lambda: self._aws().client("lambda"),
            routes=[],
            inbox=self.inbox,
            on_registry_event=self._registry_event,
            hook_secret=self._hook_secret,
            port=http_port,
            on_aws_event=self._aws_event,
        )
        self.server.start()
        self.registry = RegistryServer(
            self.state_dir / "registry",
            port=registry_port,
            notifications=[
                NotificationEndpoint(
                    url=f"{self.server.url}/_events/registry",
                    name="stack",
                    ignored_actions=("pull",),
                    timeout="5s",
                    backoff="1s",
                    headers=((HOOK_HEADER, self._hook_secret),),
                )
            ],
        ).start()
        self.aws = LocalAws(
            self.state_dir / "aws",
            port=aws_port,
            events_url=f"{self.server.url}/_events/aws",
            events_secret=self._hook_secret,
        ).start()
        # The functions reach the registry as `registry_front` (given the registry's URL)
        # says: a proxy in front of it, such as the tests' ECR-flavoured one.
        front = self.registry_front(self.registry.url) if self.registry_front else None
        parameters = {"RegistryUrl": front or self.registry.url, **self.parameters}
        self.deployment = deploy(
            self.aws,
            self.project_dir,
            stack_name=self.stack_name,
            parameters=parameters,
            api_url=self.server.url + "/",
        )
        if self.deployment.unsupported:
            log.warning("resource types with no local counterpart: %s", self.deployment.unsupported)
        self.server.routes = [r for routes in self.deployment.http_apis.values() for r in routes]
        sns = self.aws.client("sns")
        for topic in self.deployment.topics.values():
            sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=self.server.sns_endpoint)
        self.runner = PipelineRunner(
            self.deployment.pipelines,
            self.deployment.rules,
            self.aws.client("stepfunctions"),
            self.state_dir,
            on_run=self.on_run,
        )
        self.runner.start()
        self.server.mount("/", Console(deployed_stack(self.info), self.inbox))
        (self.state_dir / STATE_FILE).write_text(json.dumps(self.info.__dict__, indent=2))

    @property
    def info(self) -> StackInfo:
        assert self.server and self.registry and self.aws and self.deployment
        return StackInfo(
            pid=os.getpid(),
            state_dir=str(self.state_dir),
            registry_url=self.registry.url,
            aws_endpoint=self.aws.endpoint_url,
            console_url=self.server.url + "/",
            stack_name=self.stack_name,
            outputs=self.deployment.outputs,
        )

    def _aws(self) -> LocalAws:
        assert self.aws is not None
        return self.aws

    def _registry_event(self, notification: dict[str, Any]) -> None:
        if self.runner is not None and self.registry is not None:
            self.runner.notify(notification, self.registry.host)

    def _aws_event(self, event: dict[str, Any]) -> None:
        if self.deployment is not None and self.aws is not None:
            deliver(self.deployment.rules.values(), event, self.aws.client("lambda"))

    def stop(self) -> None:
        """Stop every part (children included); safe to call twice."""
        if self.runner is not None:
            self.runner.stop()
        for part in (self.server, self.registry, self.aws):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.stop()
        self.runner = self.server = self.registry = self.aws = None
        with contextlib.suppress(OSError):
            data = json.loads((self.state_dir / STATE_FILE).read_text())
            if data.get("pid") == os.getpid():
                (self.state_dir / STATE_FILE).unlink()


def stop_running(state_dir: Path | None = None, timeout: float = 20.0) -> StackInfo | None:
    """Ask the running stack to stop (SIGTERM) and wait until its process is gone."""
    info = running_stack(state_dir)
    if info is None:
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    return info


def deployed_stack(info: StackInfo) -> DeployedStack:
    """The running embedded stack as a `DeployedStack` (same outputs as CloudFormation's)."""
    import boto3

    key_id, secret = LOCAL_CREDENTIALS
    session = boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=REGION
    )

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=info.aws_endpoint)  # type: ignore[call-overload]

    return DeployedStack(
        name=f"{info.stack_name} (local)",
        outputs=info.outputs,
        client=client,
        registry=RegistryClient(info.registry_url),
    )
