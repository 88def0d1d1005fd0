"""`image-cicd local up --detach` / `local down` as a user runs them: separate
processes, and nothing left running afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "image_cicd.cli.main", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def processes_using(path: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if str(path) in cmd and state != "Z":
                found.append(cmd)
    return found


def test_up_detached_status_and_down_leave_nothing_running(tmp_path: Path) -> None:
    state = tmp_path / "state"

    up = cli(state, "local", "up", "--detach", "--repositories", "repo-1")

    assert up.returncode == 0, up.stdout + up.stderr
    assert "console" in up.stdout
    status = json.loads(cli(state, "local", "status", "--json").stdout)
    assert status["running"] is True
    assert processes_using(state)  # the stack, its registry, moto
    assert cli(state, "push", "ecr-dev/repo-1:latest", "--size", "100KB").returncode == 0

    down = cli(state, "local", "down")

    assert down.stdout.strip() == "stopped"
    deadline = time.monotonic() + 20
    while processes_using(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_using(state) == []
    assert cli(state, "local", "status").returncode == 1
