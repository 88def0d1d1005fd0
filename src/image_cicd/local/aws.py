"""The local AWS endpoint: a moto server child process whose Lambda runs locally.

``LocalAws`` starts ``python -m image_cicd.local.moto_main`` in its own process group,
waits until it listens, and stops it (and every Lambda worker it started) on ``stop()``.
Functions are created through the ordinary Lambda API and their local spec (code
directory, layers, environment, timeout) is registered in ``<state_dir>/functions.json``,
which the server re-reads when it changes: :meth:`LocalAws.deploy_function` does both.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Self

from image_cicd.local.lambda_runtime import DEFAULT_REGION, FunctionSpec
from image_cicd.local.moto_main import EVENTS_SECRET_ENV, FUNCTIONS_FILE, FunctionRegistry
from image_cicd.local.service import Service

DEFAULT_ROLE_NAME = "image-cicd-local-lambda"
_LAMBDA_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


class LocalAwsError(RuntimeError):
    """The local AWS endpoint could not be started."""


class LocalAws(Service):
    """A moto server (ASL interpreter on, Lambda run by the local runtime) in a child process."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        python: str = sys.executable,
        startup_timeout: float = 60.0,
        verbose: bool = False,
        events_url: str | None = None,
        events_secret: str = "",
    ) -> None:
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="image-cicd-aws-")).resolve()
        self.host = host
        self.requested_port = port
        self.region = region
        self.python = python
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self.events_url = events_url  # receives Step Functions' EventBridge events
        self.events_secret = events_secret  # sent with each, as the stack's hook header
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._specs: dict[str, FunctionSpec] = {}
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def functions_file(self) -> Path:
        return self.state_dir / FUNCTIONS_FILE

    @property
    def log_file(self) -> Path:
        """The server's own output."""
        return self.state_dir / "moto.log"

    @property
    def lambda_log_dir(self) -> Path:
        """``<function name>.log`` per function: START/END/REPORT lines and the handler's output."""
        return self.state_dir / "logs"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalAwsError("not started")
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._proc is not None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.functions_file.exists():
            data = json.loads(self.functions_file.read_text(encoding="utf-8"))
            self._specs = {k: FunctionSpec.from_json(v) for k, v in data.items()}
        ready = self.state_dir / "moto.ready"
        ready.unlink(missing_ok=True)
        cmd = [
            self.python,
            "-m",
            "image_cicd.local.moto_main",
            "--host",
            self.host,
            "--port",
            str(self.requested_port),
            "--state-dir",
            str(self.state_dir),
            "--ready-file",
            str(ready),
            "--region",
            self.region,
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.verbose:
            cmd.append("--verbose")
        if self.events_url:
            cmd += ["--events-url", self.events_url]
        env = dict(os.environ)
        env.pop("MOTO_PORT", None)
        env.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": self.region,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.events_secret:
            env[EVENTS_SECRET_ENV] = self.events_secret
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # one process group: stop() ends it all
            )
        deadline = time.monotonic() + self.startup_timeout
        while not ready.exists():
            if self._proc.poll() is not None:
                self._proc = None
                raise LocalAwsError(f"moto server exited during startup:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise LocalAwsError(f"moto server not ready after {self.startup_timeout}s")
            time.sleep(0.02)
        self._port = int(json.loads(ready.read_text())["port"])
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and everything it started; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server kills its Lambda workers
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
        self._port = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # -- clients and functions ------------------------------------------------------

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` on this endpoint, with fake credentials."""
        import boto3

        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - fake
        )

    def register_function(self, spec: FunctionSpec) -> None:
        """Make ``spec`` the local code of the function named ``spec.name``."""
        with self._lock:
            self._specs[spec.name] = spec
            self.state_dir.mkdir(parents=True, exist_ok=True)
            FunctionRegistry.write(self.functions_file, self._specs)

    def ensure_role(self, name: str, trust_policy: dict[str, Any] | None = None) -> str:
        """Create the IAM role ``name`` if missing (Lambda trust by default); return its ARN."""
        iam = self.client("iam")
        try:
            return str(iam.get_role(RoleName=name)["Role"]["Arn"])
        except iam.exceptions.NoSuchEntityException:
            doc = json.dumps(trust_policy or _LAMBDA_TRUST_POLICY)
            return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=doc)["Role"]["Arn"])

    def deploy_function(
        self,
        spec: FunctionSpec,
        *,
        role_arn: str | None = None,
        runtime: str = "python3.11",
    ) -> str:
        """Create (or update) the function through the Lambda API and register its spec.

        Without ``role_arn`` a role is created for it (moto checks that the role exists).
        Returns the function ARN.
        """
        self.register_function(spec)
        role_arn = role_arn or self.ensure_role(DEFAULT_ROLE_NAME)
        lam = self.client("lambda")
        config: dict[str, Any] = {
            "Role": role_arn,
            "Handler": spec.handler,
            "Runtime": runtime,
            "Timeout": max(1, round(spec.timeout_seconds)),
            "MemorySize": spec.memory_mb,
            "Environment": {"Variables": dict(spec.environment)},
        }
        try:
            arn = lam.get_function(FunctionName=spec.name)["Configuration"]["FunctionArn"]
        except lam.exceptions.ResourceNotFoundException:
            created = lam.create_function(
                FunctionName=spec.name, Code={"ZipFile": _placeholder_zip()}, **config
            )
            return str(created["FunctionArn"])
        lam.update_function_configuration(FunctionName=spec.name, **config)
        return str(arn)


def _placeholder_zip() -> bytes:
    """The code package the Lambda API is given; the local runtime runs ``code_dir``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "# runs from the local code directory, see functions.json\n")
    return buf.getvalue()
