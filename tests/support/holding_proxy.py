"""A registry proxy that stops one chosen request in flight, to kill its sender there.

:class:`HoldingProxy` forwards everything (it is a :class:`FaultProxy` without faults)
but holds the first request matching ``hold(method, path)``: that one is not
forwarded (or, with ``forward=True``, forwarded and its answer held back), and the
proxy says which process sent it (:meth:`Held.sender`), so a test can kill that
process at exactly that point - after everything it did before, before what that
request does (or before it learns that it was done). Once released, the held
request's connection is dropped without an answer.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from image_cicd.local.fault_proxy import FaultProxy, ProxyHandler


class Held:
    """The request a :class:`HoldingProxy` holds, once it arrives."""

    def __init__(self, method: str, path: str, *, forward: bool) -> None:
        self.method = method
        self.path = path
        self.forward = forward
        self.client_port: int | None = None
        self.arrived = threading.Event()
        self.released = threading.Event()

    def wait(self, timeout: float) -> None:
        if not self.arrived.wait(timeout):
            raise TimeoutError(f"no {self.method} {self.path} within {timeout}s")

    def sender(self, proxy_port: int) -> int:
        """The pid of the process whose connection carried the held request."""
        assert self.client_port is not None
        return pid_of_connection(self.client_port, proxy_port)


class HoldingProxy(FaultProxy):
    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._holds: list[Held] = []
        self._holds_lock = threading.Lock()

    def hold(self, method: str, path: str, *, forward: bool = False) -> Held:
        """Hold the next ``method path`` request (the path without its query): before
        forwarding it, or with ``forward`` after, holding back the registry's answer."""
        held = Held(method, path, forward=forward)
        with self._holds_lock:
            self._holds.append(held)
        return held

    def release_all(self) -> None:
        with self._holds_lock:
            holds, self._holds = self._holds, []
        for held in holds:
            held.released.set()

    def answer(self, handler: ProxyHandler, body: Iterator[bytes] | None) -> bool:
        path = handler.path.split("?", 1)[0]
        with self._holds_lock:
            held = next(
                (h for h in self._holds if (h.method, h.path) == (handler.command, path)), None
            )
            if held is not None:
                self._holds.remove(held)
        if held is None:
            return super().answer(handler, body)
        if held.forward:

            def hold_the_answer(
                status: int, headers: list[tuple[str, str]]
            ) -> tuple[int, list[tuple[str, str]]]:
                self._hold(held, handler)
                raise ConnectionAbortedError("the held answer is not relayed")

            handler.forward(body, on_response=hold_the_answer)
            return True
        for _ in body or ():
            pass  # the whole request arrived: its sender is waiting for the answer
        self._hold(held, handler)
        return True

    @staticmethod
    def _hold(held: Held, handler: ProxyHandler) -> None:
        held.client_port = handler.client_address[1]
        held.arrived.set()
        held.released.wait()
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.release_all()
        super().stop()


def pid_of_connection(local_port: int, remote_port: int) -> int:
    """The process holding the loopback TCP socket ``local_port`` -> ``remote_port``."""
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == local_port
                    and int(remote.rsplit(":", 1)[1], 16) == remote_port
                ):
                    inode = fields[9]
    if inode is None:
        raise LookupError(f"no TCP socket {local_port} -> {remote_port}")
    wanted = f"socket:[{inode}]"
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        return pid
    raise LookupError(f"no process holds the socket {local_port} -> {remote_port}")
