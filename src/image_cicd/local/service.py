"""What the local components have in common: they run between ``start()`` and
``stop()``, also as a ``with`` block (:class:`Service`); the HTTP servers among them
serve from a daemon thread (:class:`ThreadedHttpService`)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from http.server import ThreadingHTTPServer
from typing import Self

__all__ = ["Service", "ThreadedHttpService"]


class Service(ABC):
    """Runs from ``start()`` (which returns it) to ``stop()``; ``with`` does both."""

    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ThreadedHttpService(Service):
    """An HTTP server (bound when constructed) served by a daemon thread once started.

    ``start()`` twice serves once; ``stop()`` ends the thread, if any, and closes the
    socket (a server never started is closed too).
    """

    def __init__(self, httpd: ThreadingHTTPServer, thread_name: str) -> None:
        self._httpd = httpd
        self._httpd.daemon_threads = True
        self._thread_name = thread_name
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, args=(0.05,), name=self._thread_name, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
