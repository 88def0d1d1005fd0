"""The moto server process of the local stack (``python -m image_cicd.local.moto_main``).

Started by :class:`image_cicd.local.aws.LocalAws`. It turns on moto's Step Functions
ASL interpreter and moto's Docker-free Lambda backend, and replaces that backend's
``invoke`` - the one call every Lambda invocation goes through, whether it comes from
the Lambda Invoke API or from a state machine Task - with the local Lambda runtime.
Each function's local spec (code directory, layers, environment, timeout) is read by
name from a JSON file that the parent rewrites (atomically) whenever it registers one.
Step Functions is made to answer as AWS does where moto's interpreter does not
(:mod:`image_cicd.local.moto_stepfunctions`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from image_cicd.local import moto_stepfunctions
from image_cicd.local.lambda_runtime import FunctionSpec, InvokeResult, LocalLambdaRuntime

FUNCTIONS_FILE = "functions.json"
NOT_REGISTERED_ERROR = "Local.FunctionNotRegistered"
EVENTS_SECRET_ENV = "IMAGE_CICD_EVENTS_SECRET"  # noqa: S105 - a variable's name
EVENTS_SECRET_HEADER = "X-Image-Cicd-Hook"  # noqa: S105 - image_cicd.local.server.HOOK_HEADER


class FunctionRegistry:
    """Function specs by name, re-read from a JSON file whenever it is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._specs: dict[str, FunctionSpec] = {}

    def get(self, name: str) -> FunctionSpec | None:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._specs = None, {}
                return None
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self._specs = {k: FunctionSpec.from_json(v) for k, v in data.items()}
                self._stamp = stamp
            return self._specs.get(name)

    @staticmethod
    def write(path: Path, specs: Mapping[str, FunctionSpec]) -> None:
        """Replace the file atomically (readers never see a partial file)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(
            json.dumps({k: v.to_json() for k, v in specs.items()}, indent=2), encoding="utf-8"
        )
        os.replace(tmp, path)


def install(registry: FunctionRegistry, runtime: LocalLambdaRuntime) -> None:
    """Configure moto and route ``LambdaSimpleBackend.invoke`` to ``runtime``."""
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.core.config import default_user_config

    default_user_config["lambda"] = {"use_docker": False}
    default_user_config["stepfunctions"] = {"execute_state_machine": True}

    def invoke(
        self: LambdaSimpleBackend,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: dict[str, Any],
    ) -> bytes | None:
        fn = self.get_function(function_name, qualifier)  # raises ResourceNotFound
        invocation_type = "RequestResponse"
        for key, value in dict(headers or {}).items():
            if key.lower() == "x-amz-invocation-type":
                invocation_type = str(value)
        payload = body.encode() if isinstance(body, str) else bytes(body or b"")
        spec = registry.get(fn.function_name)
        if invocation_type == "DryRun":
            return b""
        if spec is None:
            error = {
                "errorType": NOT_REGISTERED_ERROR,
                "errorMessage": f"no local spec registered for function {fn.function_name}",
            }
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps(error).encode()
        # The Lambda API holds the configuration (update_function_configuration
        # applies, as on AWS); the spec says where the code is.
        spec = dataclasses.replace(
            spec,
            environment={str(k): str(v) for k, v in (fn.environment_vars or {}).items()},
            timeout_seconds=float(fn.timeout or spec.timeout_seconds),
        )
        if invocation_type == "Event":
            threading.Thread(
                target=runtime.invoke,
                args=(spec, payload),
                kwargs={"invoked_function_arn": fn.function_arn},
                daemon=True,
            ).start()
            return b""
        result: InvokeResult = runtime.invoke(spec, payload, invoked_function_arn=fn.function_arn)
        if result.function_error:
            response_headers["x-amz-function-error"] = result.function_error
        response_headers["x-amz-log-result"] = result.log_result
        response_headers["x-amz-executed-version"] = "$LATEST"
        response_headers["x-amzn-RequestId"] = result.request_id
        response_headers["Content-Length"] = str(len(result.payload))
        return result.payload

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m image_cicd.local.moto_main")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when it exits")
    parser.add_argument(
        "--events-url", help="where to POST the EventBridge events of Step Functions executions"
    )
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    port = int(server.server_port)
    # The ASL interpreter calls back into this server on localhost:$MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)
    endpoint_url = f"http://{args.host}:{port}"
    runtime = LocalLambdaRuntime(
        endpoint_url=endpoint_url, region=args.region, log_dir=state_dir / "logs"
    ).start()  # its zygote warms up while functions are being deployed
    install(FunctionRegistry(state_dir / FUNCTIONS_FILE), runtime)
    # The stack's webhook secret comes in the environment (not on the command line).
    secret = os.environ.pop(EVENTS_SECRET_ENV, "")
    moto_stepfunctions.install(args.events_url, {EVENTS_SECRET_HEADER: secret} if secret else {})

    def shutdown(signum: int = 0, frame: FrameType | None = None) -> None:
        runtime.kill_all()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    if args.parent_pid:

        def watch_parent() -> None:
            while os.getppid() == args.parent_pid:
                time.sleep(0.5)
            shutdown()

        threading.Thread(target=watch_parent, daemon=True).start()

    ready: Path = args.ready_file
    tmp = ready.with_name(ready.name + ".tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid(), "endpoint_url": endpoint_url}))
    os.replace(tmp, ready)
    print(f"moto server with local Lambda runtime on {endpoint_url}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
