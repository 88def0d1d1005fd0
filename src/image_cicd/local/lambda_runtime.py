"""A local Lambda runtime: every invocation runs the handler in its own child process.

The children are forked from a zygote (``lambda_worker.py``, started on the first
invocation, one per runtime) that has already imported boto3, Powertools and the other
modules handlers use, so an invocation costs a fork instead of a Python start-up. Each
child gets the function's environment plus what the Lambda service sets (function
name, region, memory, fake credentials) and ``AWS_ENDPOINT_URL`` pointing at the local
AWS endpoint, imports the handler afresh and exits after one invocation: nothing leaks
from one invocation into the next. The handler's prints go to a per-invocation file,
which are the function's logs; the result comes back on a socket. Timeouts kill the
child's whole process group. Results and errors have the shapes the Lambda service
returns, so Step Functions Retry/Catch match on the same error names.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from image_cicd.local import lambda_worker

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"
LOG_TAIL_BYTES = 4096
_WORKER_FILE = Path(lambda_worker.__file__).resolve()
# Room in the zygote's command line for its children's titles (function name, code dir).
_TITLE_ROOM = 300
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


def _signal_name(number: int) -> str:
    """How Lambda names the signal that killed a runtime: Go's names ("killed" for
    SIGKILL, "segmentation fault" for SIGSEGV), which are the C library's, lower-cased."""
    return (signal.strsignal(number) or f"signal {number}").lower()


class LocalLambdaRuntime:
    """Runs handlers in child processes, one per invocation (thread-safe).

    The children are forked from a zygote process that the runtime starts on the first
    invocation (or on :meth:`start`) and stops on :meth:`kill_all`/:meth:`close`, when
    it is garbage-collected, at interpreter exit, or - by itself - when this process dies.
    """

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
        self._running: set[int] = set()  # sandbox pids (each leads its process group)
        self._zygote: _Zygote | None = None
        self._stop_zygote: weakref.finalize[[], LocalLambdaRuntime] | None = None
        self._closed = False

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def _common_environment(self) -> dict[str, str]:
        """What every sandbox has (the zygote too, so modules it imports see it)."""
        env = {k: os.environ[k] for k in _INHERITED_VARIABLES if k in os.environ}
        env.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
                "TZ": ":UTC",
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                # no X-Ray daemon here; the function's template may still override this
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env

    def environment_for(self, spec: FunctionSpec) -> dict[str, str]:
        """The child's environment: Lambda's reserved variables, then the function's."""
        env = self._common_environment()
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": spec.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
                "LAMBDA_TASK_ROOT": str(spec.code_dir),
                "_HANDLER": spec.handler,
            }
        )
        env.update(spec.environment)
        return env

    @property
    def zygote_pid(self) -> int | None:
        """The zygote's pid, if it has been started."""
        zygote = self._zygote
        return zygote.proc.pid if zygote else None

    def start(self) -> Self:
        """Start the zygote now rather than on the first invocation (it needs a second)."""
        with self._lock:
            if not self._closed:
                self._ensure_zygote()
        return self

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
        deadline = started + spec.timeout_seconds
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
            "deadline": deadline,
            "environment": self.environment_for(spec),
        }
        with tempfile.TemporaryFile() as log:
            timed_out, frame = self._run(params, payload, log, deadline)
            logs = os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0)
        duration_ms = (time.time() - started) * 1000
        text = logs.decode(errors="replace")

        function_error: str | None = "Unhandled"
        if timed_out:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            message = (
                f"{stamp} {request_id} Task timed out after {spec.timeout_seconds:.2f} seconds"
            )
            body = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": message}).encode()
            text += message + "\n"
        elif frame is not None and frame[0] == b"R":
            body = frame[1][1:]
            if frame[1][0] == lambda_worker.EXIT_OK:
                function_error = None
        else:
            reason = "Runtime exited without providing a reason"
            if frame is not None and frame[0] == b"X":
                code = int(frame[1])
                status = f"signal: {_signal_name(-code)}" if code < 0 else f"exit status {code}"
                reason = f"Runtime exited with error: {status}"
            body = json.dumps(
                {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {request_id} Error: {reason}",
                }
            ).encode()

        text = (
            f"START RequestId: {request_id} Version: {function_version}\n{text}"
            f"END RequestId: {request_id}\n"
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Memory Size: {spec.memory_mb} MB\n"
        )
        self._write_log(spec.name, text)
        tail = text.encode()[-LOG_TAIL_BYTES:].decode(errors="replace")
        return InvokeResult(200, body, function_error, tail, request_id, duration_ms)

    def _run(
        self, params: dict[str, Any], payload: bytes, log: IO[bytes], deadline: float
    ) -> tuple[bool, tuple[bytes, bytes] | None]:
        """Have the zygote fork a sandbox for one invocation; (timed out, last frame)."""
        ours, theirs = socket.socketpair()
        pid: int | None = None
        frame: tuple[bytes, bytes] | None = None
        with ours:
            try:
                with theirs:
                    if not self._submit(theirs, log):
                        return False, (b"X", str(-signal.SIGKILL).encode())
                _until(ours, deadline)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    lambda_worker.send_frame(ours, b"Q", json.dumps(params).encode())
                    lambda_worker.send_frame(ours, b"E", payload)
                while True:
                    _until(ours, deadline)
                    frame = lambda_worker.recv_frame(ours)
                    if frame is None or frame[0] != b"P":
                        return False, frame
                    pid = self._started(int(frame[1]))
            except TimeoutError:
                if pid is None:  # a sandbox that started at the last moment
                    with contextlib.suppress(OSError, ValueError):
                        ours.settimeout(0.05)
                        if (late := lambda_worker.recv_frame(ours)) and late[0] == b"P":
                            pid = int(late[1])
                return True, None
            except ConnectionResetError:
                return False, None
            finally:
                if pid is not None:
                    _kill_group(pid)  # anything the handler left running in the background
                    with self._lock:
                        self._running.discard(pid)

    def _submit(self, conn: socket.socket, log: IO[bytes]) -> bool:
        """Hand ``conn`` and ``log`` to the zygote (started if needed); False once closed."""
        with self._lock:
            for attempt in range(2):
                if self._closed:
                    return False
                zygote = self._ensure_zygote()
                try:
                    zygote.submit(conn, log)
                    return True
                except OSError:  # it died: start another one
                    if attempt:
                        raise
                    self._replace_zygote(None)
        return False

    def _started(self, pid: int) -> int:
        with self._lock:
            self._running.add(pid)
            closed = self._closed
        if closed:
            _kill_group(pid)
        return pid

    def _ensure_zygote(self) -> _Zygote:
        """(Called with the lock held.)"""
        if self._zygote is None or self._zygote.proc.poll() is not None:
            env = self._common_environment()
            # Modules the zygote imports check it (the X-Ray SDK: "am I on Lambda?").
            env["LAMBDA_TASK_ROOT"] = str(_WORKER_FILE.parent)
            self._replace_zygote(_Zygote(self.python, env))
        assert self._zygote is not None
        return self._zygote

    def _replace_zygote(self, zygote: _Zygote | None) -> None:
        """(Called with the lock held.)"""
        if self._stop_zygote is not None:
            self._stop_zygote()
        self._zygote = zygote
        self._stop_zygote = weakref.finalize(self, zygote.stop) if zygote else None

    def kill_all(self) -> None:
        """Kill every running invocation and the zygote (and refuse new invocations)."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for pid in running:
            _kill_group(pid)
        with self._lock:
            self._replace_zygote(None)

    close = kill_all

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_log(self, function_name: str, text: str) -> None:
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{function_name}.log").open("a", encoding="utf-8") as f:
            f.write(text)


class _Zygote:
    """The zygote process and the control socket that hands it invocations."""

    def __init__(self, python: str, env: dict[str, str]) -> None:
        self.control, theirs = socket.socketpair()
        with theirs:
            self.proc = subprocess.Popen(
                [
                    python,
                    "-u",
                    str(_WORKER_FILE),
                    "--control-fd",
                    str(theirs.fileno()),
                    "--parent-pid",
                    str(os.getpid()),
                    "--title-room",
                    "." * _TITLE_ROOM,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                pass_fds=[theirs.fileno()],
            )

    def submit(self, conn: socket.socket, log: IO[bytes]) -> None:
        socket.send_fds(self.control, [b"I"], [conn.fileno(), log.fileno()])

    def stop(self) -> None:
        """Stop it; it kills the sandboxes it is running."""
        self.control.close()  # it exits on EOF, or on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _until(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.time()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
