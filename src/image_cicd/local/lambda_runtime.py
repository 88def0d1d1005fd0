"""A local Lambda runtime: every invocation runs the handler in a fresh child process.

The child (``lambda_worker.py``) gets the function's environment plus what the Lambda
service sets (function name, region, memory, fake credentials) and ``AWS_ENDPOINT_URL``
pointing at the local AWS endpoint, reads the event on stdin and writes the result on a
channel separate from the handler's prints, which are the function's logs. Timeouts
kill the child's whole process group. Results and errors have the shapes the Lambda
service returns, so Step Functions Retry/Catch match on the same error names.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from image_cicd.local import lambda_worker

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"
LOG_TAIL_BYTES = 4096
_WORKER_FILE = Path(lambda_worker.__file__).resolve()
# What a Lambda sandbox has besides the function's own variables; the rest of this
# process's environment is not passed on.
_INHERITED_VARIABLES = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "SYSTEMROOT")


@dataclass(frozen=True)
class FunctionSpec:
    """What the local runtime needs to run one function (from its template resource)."""

    name: str
    code_dir: Path
    handler: str = "app.lambda_handler"
    layer_dirs: list[Path] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    timeout_seconds: float = 3.0
    memory_mb: int = 128

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "code_dir": str(self.code_dir),
            "handler": self.handler,
            "layer_dirs": [str(p) for p in self.layer_dirs],
            "environment": dict(self.environment),
            "timeout_seconds": self.timeout_seconds,
            "memory_mb": self.memory_mb,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FunctionSpec:
        return cls(
            name=str(data["name"]),
            code_dir=Path(data["code_dir"]),
            handler=str(data.get("handler", "app.lambda_handler")),
            layer_dirs=[Path(p) for p in data.get("layer_dirs", [])],
            environment={str(k): str(v) for k, v in data.get("environment", {}).items()},
            timeout_seconds=float(data.get("timeout_seconds", 3.0)),
            memory_mb=int(data.get("memory_mb", 128)),
        )


@dataclass(frozen=True)
class InvokeResult:
    """One invocation's outcome, as the Lambda Invoke API reports it."""

    status_code: int
    payload: bytes
    function_error: str | None
    log_tail: str
    request_id: str
    duration_ms: float

    @property
    def log_result(self) -> str:
        """The ``X-Amz-Log-Result`` header value (base64 of the log tail)."""
        return base64.b64encode(self.log_tail.encode()).decode()

    def json(self) -> Any:
        return json.loads(self.payload)


class LocalLambdaRuntime:
    """Runs handlers in child processes, one per invocation (thread-safe)."""

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
        python: str = sys.executable,
        log_dir: Path | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.account_id = account_id
        self.python = python
        self.log_dir = log_dir
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def environment_for(self, spec: FunctionSpec) -> dict[str, str]:
        """The child's environment: Lambda's reserved variables, then the function's."""
        env = {k: os.environ[k] for k in _INHERITED_VARIABLES if k in os.environ}
        env.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_LAMBDA_FUNCTION_NAME": spec.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
                "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
                "LAMBDA_TASK_ROOT": str(spec.code_dir),
                "_HANDLER": spec.handler,
                "TZ": ":UTC",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                # no X-Ray daemon here; the function's template may still override this
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        env.update(spec.environment)
        return env

    def invoke(
        self,
        spec: FunctionSpec,
        payload: bytes,
        *,
        request_id: str | None = None,
        invoked_function_arn: str | None = None,
        function_version: str = "$LATEST",
    ) -> InvokeResult:
        """Run ``spec``'s handler on ``payload`` (the event as JSON bytes) and wait for it."""
        request_id = request_id or str(uuid.uuid4())
        started = time.time()
        today = dt.datetime.now(dt.UTC).strftime("%Y/%m/%d")
        params = {
            "function_name": spec.name,
            "function_version": function_version,
            "invoked_function_arn": invoked_function_arn or self.function_arn(spec.name),
            "memory_mb": spec.memory_mb,
            "request_id": request_id,
            "log_group_name": f"/aws/lambda/{spec.name}",
            "log_stream_name": f"{today}/[{function_version}]{uuid.uuid4().hex}",
            "handler": spec.handler,
            "code_dir": str(spec.code_dir),
            "layer_dirs": [str(p) for p in spec.layer_dirs],
            "deadline": started + spec.timeout_seconds,
        }
        env = self.environment_for(spec)
        env[lambda_worker.INVOKE_ENV] = json.dumps(params)
        proc = subprocess.Popen(
            [self.python, "-u", str(_WORKER_FILE), str(spec.code_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=spec.code_dir,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills it all
        )
        with self._lock:
            if self._closed:
                _kill_group(proc)
            self._running.add(proc)
        timed_out = False
        try:
            out, err = proc.communicate(payload, timeout=spec.timeout_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            out, err = proc.communicate()
        finally:
            _kill_group(proc)  # anything the handler left running in the background
            with self._lock:
                self._running.discard(proc)
        duration_ms = (time.time() - started) * 1000
        logs = err.decode(errors="replace")

        function_error: str | None = None
        if timed_out:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            message = (
                f"{stamp} {request_id} Task timed out after {spec.timeout_seconds:.2f} seconds"
            )
            body = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": message}).encode()
            logs += message + "\n"
            function_error = "Unhandled"
        elif proc.returncode in (lambda_worker.EXIT_OK, lambda_worker.EXIT_FUNCTION_ERROR) and out:
            body = out
            if proc.returncode == lambda_worker.EXIT_FUNCTION_ERROR:
                function_error = "Unhandled"
        else:
            status = (
                f"signal: {signal.Signals(-proc.returncode).name}"
                if proc.returncode < 0
                else f"exit status {proc.returncode}"
            )
            body = json.dumps(
                {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: "
                    f"{status}",
                }
            ).encode()
            function_error = "Unhandled"

        logs = (
            f"START RequestId: {request_id} Version: {function_version}\n{logs}"
            f"END RequestId: {request_id}\n"
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Memory Size: {spec.memory_mb} MB\n"
        )
        self._write_log(spec.name, logs)
        tail = logs.encode()[-LOG_TAIL_BYTES:].decode(errors="replace")
        return InvokeResult(200, body, function_error, tail, request_id, duration_ms)

    def kill_all(self) -> None:
        """Kill every running invocation (and refuse new ones); used at shutdown."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for proc in running:
            _kill_group(proc)

    def _write_log(self, function_name: str, text: str) -> None:
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{function_name}.log").open("a", encoding="utf-8") as f:
            f.write(text)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
