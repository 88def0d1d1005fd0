"""`make demo` end to end: its last line is the promised JSON summary."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_promotes_twice_rolls_back_and_ends_with_the_summary() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "image_cicd.local.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])

    digest = summary["source"]["digest"]
    assert summary["source"]["repository"] == "ecr-dev/repo-1"
    assert summary["test"] == {"repository": "ecr-test/repo-1", "version": "v0.1", "digest": digest}
    assert summary["prod"] == {"repository": "ecr-prod/repo-1", "version": "v0.1", "digest": digest}
    assert summary["rollback"] == {"from": "v0.2", "to": "v0.1"}
    assert summary["seconds"] > 0
    assert "Rollback from v0.2 to v0.1" in done.stdout
    assert "approved PROD on the approval page (HTTP 200)" in done.stdout
