"""The sandbox processes of the local Lambda runtime: a zygote that forks one per invocation.

``LocalLambdaRuntime`` starts this file as a script (``python -u lambda_worker.py
--control-fd N --parent-pid P``) with the environment common to every function. The
zygote imports what handlers import (boto3, botocore, pydantic, Powertools, the X-Ray
SDK, requests, the image_cicd core), warms botocore's data loader, and then waits on the
control socket. For each invocation the runtime sends it one connection and one log
file (``SCM_RIGHTS``); the zygote forks, and the child becomes the invocation's
sandbox: a new session (a timeout kills its whole process group), exactly the
function's environment, ``sys.path`` = code directory, layers, site-packages, the code
directory as working directory, fds 1 and 2 on the log file. It imports the handler
module itself - never the zygote, since handlers build Powertools objects from the
environment at import - runs it, and exits. Nothing an invocation does (module globals,
``os.environ``, caches) reaches the next one: each starts from the zygote's state.

If a function's code directory or layers hold their own copy of a package the zygote
imported (say a Powertools layer), the child drops every module the zygote added, so the
handler imports its own copy as it would in a fresh process.

Protocol on the connection, frames of ``kind (1 byte), length (4 bytes), data``:
runtime -> child ``Q`` (the invocation as JSON) and ``E`` (the event); child -> runtime
``P`` (its pid, once it leads its own process group) and ``R`` (a status byte, 0 for
success or 3 for a function error, then the result or Lambda's error object as JSON);
zygote -> runtime ``X`` (the exit code when a child ended, the negated signal number
if a signal killed it) - after ``R`` nobody reads it, without ``R`` it is a runtime exit
error. The zygote exits (killing running sandboxes) when the control socket closes,
when its parent dies, or on SIGTERM.

The zygote stays single-threaded, so forking it is safe.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import io
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

EXIT_OK = 0
EXIT_FUNCTION_ERROR = 3
_HERE = os.path.dirname(os.path.abspath(__file__))
_HEADER = struct.Struct("!cI")

# What handlers import, imported once by the zygote (missing ones are skipped).
PRELOAD = (
    "boto3",
    "botocore.session",
    "botocore.client",
    "pydantic",
    "requests",
    "aws_lambda_powertools",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.tracing",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.utilities.parser",
    "aws_lambda_powertools.utilities.typing",
    "aws_xray_sdk.core",  # Tracer() imports it: half a second
    "image_cicd.aws.wiring",
    "image_cicd.promotion.steps",
    "image_cicd.promotion.payloads",
    "image_cicd.approvals.decisions",
    "image_cicd.approvals.endpoint",
    "image_cicd.promotion.checks",
    "image_cicd.aws.stepfunctions",
    "image_cicd.aws.ecr",
)
WARM_CLIENTS = ("dynamodb", "sns", "stepfunctions", "ecr", "lambda")


# -- framing (also used by the runtime) ---------------------------------------------------


def send_frame(sock: socket.socket, kind: bytes, data: bytes) -> None:
    sock.sendall(_HEADER.pack(kind, len(data)) + data)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The next frame, or None if the peer closed the connection before a whole one."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    kind, length = _HEADER.unpack(header)
    data = _recv_exact(sock, length)
    return None if data is None else (kind, data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# -- one invocation --------------------------------------------------------------------------


class LambdaContext:
    """The attributes and method of the Python runtime's context object."""

    def __init__(self, params: dict[str, Any]) -> None:
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
        self._deadline = float(params["deadline"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _error(error_type: str, message: str, exc: BaseException | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"errorMessage": message, "errorType": error_type}
    if exc is not None:
        body["stackTrace"] = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
    return body


def _marshal(body: Any, status: int) -> tuple[int, bytes]:
    try:
        return status, json.dumps(body).encode()
    except (TypeError, ValueError) as exc:
        error = _error("Runtime.MarshalError", f"Unable to marshal response: {exc}")
        return EXIT_FUNCTION_ERROR, json.dumps(error).encode()


def run_handler(params: dict[str, Any], payload: bytes) -> tuple[int, bytes]:
    """Import the handler (``sys.path`` and cwd already set) and run it on ``payload``."""
    try:
        event = json.loads(payload) if payload.strip() else {}
    except ValueError as exc:
        return _marshal(
            _error("Runtime.UnmarshalError", f"Unable to parse event: {exc}"), EXIT_FUNCTION_ERROR
        )
    module_name, _, function_name = params["handler"].rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        message = f"Unable to import module '{module_name}': {exc}"
        return _marshal(_error("Runtime.ImportModuleError", message, exc), EXIT_FUNCTION_ERROR)
    handler = getattr(module, function_name, None)
    if not callable(handler):
        message = f"Handler '{function_name}' missing on module '{module_name}'"
        return _marshal(_error("Runtime.HandlerNotFound", message), EXIT_FUNCTION_ERROR)

    context = LambdaContext(params)
    try:
        result = handler(event, context)
    except Exception as exc:
        traceback.print_exc()
        body = _error(type(exc).__name__, str(exc), exc)
        body["requestId"] = context.aws_request_id
        return _marshal(body, EXIT_FUNCTION_ERROR)
    return _marshal(result, EXIT_OK)


def _sandbox(conn: socket.socket, log_fd: int, zygote_pid: int, zygote: _Zygote) -> None:
    os.setsid()
    send_frame(conn, b"P", str(os.getpid()).encode())
    request, event = recv_frame(conn), recv_frame(conn)
    if request is None or event is None:
        return  # the runtime gave up on this invocation
    params: dict[str, Any] = json.loads(request[1])

    for fd in (1, 2):  # from here on, prints are logs
        os.dup2(log_fd, fd)
    os.close(log_fd)
    sys.stdout = _text_stream(1)
    sys.stderr = _text_stream(2)
    os.environ.clear()
    os.environ.update(params["environment"])
    time.tzset()
    code_dir: str = params["code_dir"]
    _set_title(f"image_cicd.local.lambda_worker {params['function_name']} {code_dir}")
    threading.Thread(target=_watch_parent, args=(zygote_pid,), daemon=True).start()

    own = [code_dir, *params["layer_dirs"]]
    sys.path[:] = [*own, *zygote.base_path]
    sys.argv[:] = [__file__, code_dir]
    if zygote.shadowed_by(own):
        for name in zygote.preloaded:
            sys.modules.pop(name, None)
    os.chdir(code_dir)

    status, body = run_handler(params, event[1])
    sys.stdout.flush()
    sys.stderr.flush()
    send_frame(conn, b"R", bytes([status]) + body)


def _text_stream(fd: int) -> io.TextIOWrapper:
    raw = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115 - lives as sys.std*
    return io.TextIOWrapper(
        raw,
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )


def _watch_parent(parent_pid: int) -> None:
    """If the zygote dies, take this sandbox's process group with it."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os.killpg(0, signal.SIGKILL)


def _set_title(title: str) -> None:
    """Show ``title`` as this process's command line (ps, /proc/PID/cmdline); Linux only.

    Overwrites the argv area in place, so the title is cut to the zygote's argv length
    (the runtime pads it).
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end
        data = title.encode()[: end - start - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(data.ljust(end - start, b"\0"))


# -- the zygote ------------------------------------------------------------------------------


class _Zygote:
    def __init__(self, control: socket.socket, parent_pid: int) -> None:
        self.control = control
        self.parent_pid = parent_pid
        self.base_path = [p for p in sys.path if p and os.path.abspath(p) != _HERE]
        sys.path[:] = self.base_path
        self.preloaded: list[str] = []
        self.children: dict[int, socket.socket] = {}

    def preload(self) -> None:
        before = set(sys.modules)
        for name in PRELOAD:
            with contextlib.suppress(Exception):
                importlib.import_module(name)
        if "botocore.session" in sys.modules:
            with contextlib.suppress(Exception):
                _share_botocore_loaders()
        self.preloaded = sorted(
            name
            for name in set(sys.modules) - before
            if name.partition(".")[0] not in sys.stdlib_module_names
        )

    def shadowed_by(self, dirs: list[str]) -> bool:
        """Whether ``dirs`` (code directory, layers) hold another copy of a preloaded package."""
        for top in {name.partition(".")[0] for name in self.preloaded}:
            module = sys.modules.get(top)
            spec = importlib.machinery.PathFinder.find_spec(top, dirs)
            if module is None or spec is None:
                continue
            loaded = module.__spec__
            if loaded is None or _where(spec) != _where(loaded):
                return True
        return False

    def serve(self) -> None:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)  # the wakeup fd says when to reap
        signal.signal(signal.SIGTERM, _exit_on_signal)
        try:
            while os.getppid() == self.parent_pid:
                ready, _, _ = select.select([self.control, wake_r], [], [], 1.0)
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        while wake_r.recv(4096):
                            pass
                self._reap()
                if self.control in ready and not self._accept(wake_r, wake_w):
                    return  # the runtime closed the control socket
        finally:
            for pid in self.children:
                _kill(pid)

    def _accept(self, wake_r: socket.socket, wake_w: socket.socket) -> bool:
        msg, fds, _, _ = socket.recv_fds(self.control, 1, 2)
        if not msg:
            return False
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return True
        conn, log_fd = socket.socket(fileno=fds[0]), fds[1]
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the sandbox
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sock in (self.control, wake_r, wake_w, *self.children.values()):
                    sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                _sandbox(conn, log_fd, zygote_pid, self)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(log_fd)
        self.children[pid] = conn
        return True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    send_frame(conn, b"X", str(os.waitstatus_to_exitcode(status)).encode())
                conn.close()


def _where(spec: importlib.machinery.ModuleSpec) -> tuple[str | None, list[str]]:
    origin = os.path.realpath(spec.origin) if spec.origin else None
    return origin, [os.path.realpath(p) for p in spec.submodule_search_locations or []]


def _share_botocore_loaders() -> None:
    """One botocore data loader per data path for every session in the process.

    A loader caches the JSON models it reads, but each session makes its own, so every
    ``boto3.client()`` in a fresh session re-reads endpoints and service models (0.1 s
    each). Sharing it (the models are read-only) lets sandboxes start from the zygote's
    warm cache. The warm-up uses its own session: ``boto3.DEFAULT_SESSION`` stays unset.
    """
    import boto3
    import botocore.loaders
    import botocore.session

    create = botocore.loaders.create_loader
    loaders: dict[str | None, botocore.loaders.Loader] = {}

    def create_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
        if search_path_string not in loaders:
            loaders[search_path_string] = create(search_path_string)
        return loaders[search_path_string]

    botocore.session.create_loader = create_loader
    session = boto3.session.Session(
        aws_access_key_id="warm-up",
        aws_secret_access_key="warm-up",  # noqa: S106 - fake
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    for service in WARM_CLIENTS:
        with contextlib.suppress(Exception):
            session.client(service, endpoint_url="http://127.0.0.1:9")  # type: ignore[call-overload]


def _kill(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(OSError):
            kill(pid, signal.SIGKILL)


def _ignore(signum: int, frame: FrameType | None) -> None:
    pass


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    options = dict(zip(args[::2], args[1::2], strict=False))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the runtime's process
    zygote = _Zygote(
        socket.socket(fileno=int(options["--control-fd"])), int(options["--parent-pid"])
    )
    _set_title(f"image_cicd.local.lambda_worker zygote runtime={zygote.parent_pid}")
    zygote.preload()
    zygote.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
