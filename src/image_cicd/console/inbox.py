"""The local approval inbox: the SNS messages delivered to the stack, which the
console shows. The stack's server adds to it; nothing here knows HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Inbox:
    """SNS messages delivered to the stack, one JSON object a line."""

    def __init__(self, path: Path, on_add: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.on_add = on_add
        self._lock = threading.Lock()

    def add(self, message: dict[str, Any]) -> None:
        with self._lock, self.path.open("a") as out:
            out.write(json.dumps(message) + "\n")
        if self.on_add is not None:
            self.on_add(message)

    def messages(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self._lock:
            lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
