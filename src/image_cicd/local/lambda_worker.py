"""Runs one Lambda invocation in this (fresh) process; started by ``LocalLambdaRuntime``.

Run as a script (``python lambda_worker.py <code dir>``), never imported by handlers,
and imports nothing outside the standard library before the handler's own imports, so
the handler sees the sys.path a Lambda function would: its code directory first, then
its layers, then the interpreter's site-packages.

Protocol: the invocation parameters arrive in the ``_IMAGE_CICD_INVOKE`` environment
variable (JSON), the event on stdin. The result (the handler's return value as JSON, or
Lambda's error object) is written to the original stdout; before the handler is
imported, stdout is re-pointed at stderr so that everything the handler prints is log
output. Exit status 0 means "result written and it is a success", 3 means "result
written and it is an error"; anything else (no result) is a runtime exit error.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

INVOKE_ENV = "_IMAGE_CICD_INVOKE"
EXIT_OK = 0
EXIT_FUNCTION_ERROR = 3


class LambdaContext:
    """The attributes and method of the Python runtime's context object."""

    def __init__(self, params: dict[str, Any], deadline: float) -> None:
        self.function_name: str = params["function_name"]
        self.function_version: str = params.get("function_version", "$LATEST")
        self.invoked_function_arn: str = params["invoked_function_arn"]
        self.memory_limit_in_mb: int = int(params["memory_mb"])
        self.aws_request_id: str = params["request_id"]
        self.log_group_name: str = params["log_group_name"]
        self.log_stream_name: str = params["log_stream_name"]
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _error(error_type: str, message: str, exc: BaseException | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"errorMessage": message, "errorType": error_type}
    if exc is not None:
        body["stackTrace"] = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
    return body


def _watch_parent(parent_pid: int) -> None:
    """If the runtime that started us dies, take our process group with us."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os.killpg(0, signal.SIGKILL)


def main() -> int:
    result_fd = os.dup(1)  # non-inheritable: handler subprocesses cannot hold it open
    os.dup2(2, 1)  # from here on, prints are logs
    params: dict[str, Any] = json.loads(os.environ.pop(INVOKE_ENV))
    deadline = float(params["deadline"])
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    def finish(body: Any, code: int) -> int:
        try:
            data = json.dumps(body).encode()
        except (TypeError, ValueError) as exc:
            data = json.dumps(
                _error(
                    "Runtime.MarshalError",
                    f"Unable to marshal response: {exc}",
                )
            ).encode()
            code = EXIT_FUNCTION_ERROR
        with os.fdopen(result_fd, "wb") as out:
            out.write(data)
        sys.stdout.flush()
        sys.stderr.flush()
        return code

    raw = sys.stdin.buffer.read()
    try:
        event = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        return finish(
            _error("Runtime.UnmarshalError", f"Unable to parse event: {exc}"), EXIT_FUNCTION_ERROR
        )

    code_dir: str = params["code_dir"]
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if p and os.path.abspath(p) != here]
    sys.path[:] = [code_dir, *params["layer_dirs"], *rest]

    module_name, _, function_name = params["handler"].rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return finish(
            _error(
                "Runtime.ImportModuleError",
                f"Unable to import module '{module_name}': {exc}",
                exc,
            ),
            EXIT_FUNCTION_ERROR,
        )
    handler = getattr(module, function_name, None)
    if not callable(handler):
        return finish(
            _error(
                "Runtime.HandlerNotFound",
                f"Handler '{function_name}' missing on module '{module_name}'",
            ),
            EXIT_FUNCTION_ERROR,
        )

    context = LambdaContext(params, deadline)
    try:
        result = handler(event, context)
    except Exception as exc:
        traceback.print_exc()
        body = _error(type(exc).__name__, str(exc), exc)
        body["requestId"] = context.aws_request_id
        return finish(body, EXIT_FUNCTION_ERROR)
    return finish(result, EXIT_OK)


if __name__ == "__main__":
    sys.exit(main())
