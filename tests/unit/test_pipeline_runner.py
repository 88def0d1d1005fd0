"""The local pipeline runner honours the pipeline's ExecutionMode (Step Functions faked)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from image_cicd.local.deployer import Pipeline
from image_cicd.local.trigger import PipelineRun, PipelineRunner

DIGEST = "sha256:" + "c" * 64


class Executions:
    """start_execution / describe_execution; an execution runs until `end` is called."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: set[str] = set()
        self.changed = threading.Condition()

    def start_execution(self, stateMachineArn: str, name: str, input: str) -> dict[str, str]:
        with self.changed:
            self.started.append(name)
            self.changed.notify_all()
        return {"executionArn": f"{stateMachineArn}:{name}"}

    def describe_execution(self, executionArn: str) -> dict[str, str]:
        name = executionArn.rsplit(":", 1)[-1]
        return {"status": "SUCCEEDED" if name in self.ended else "RUNNING"}

    def end(self, name: str) -> None:
        self.ended.add(name)

    def wait_started(self, count: int) -> list[str]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.started) >= count, timeout=30)
            return list(self.started)


def runner(mode: str, sfn: Executions, tmp_path: Path, seen: list[PipelineRun]) -> PipelineRunner:
    pipeline = Pipeline(
        name="image-cicd-repo-1",
        source_repository="ecr-dev/repo-1",
        image_tag="latest",
        state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:promotion",
        execution_name_prefix="repo-1",
        input_file="imageDetail.json",
        execution_mode=mode,
    )
    return PipelineRunner(
        {"Pipeline": pipeline}, {}, sfn, tmp_path, on_run=seen.append, poll_seconds=0.01
    )


def push_event() -> dict[str, Any]:
    detail = {"repository-name": "ecr-dev/repo-1", "image-digest": DIGEST, "image-tag": "latest"}
    return {"detail": detail}


def test_parallel_starts_every_run_at_once(tmp_path: Path) -> None:
    sfn, seen = Executions(), []
    running = runner("PARALLEL", sfn, tmp_path, seen)
    running.start()
    try:
        one = running.trigger("image-cicd-repo-1", push_event())
        two = running.trigger("image-cicd-repo-1", push_event())

        started = sfn.wait_started(2)  # the first is still RUNNING

        assert set(started) == {one.execution_name, two.execution_name}
        assert sfn.ended == set()
    finally:
        for name in sfn.started:
            sfn.end(name)
        running.stop()


def test_queued_starts_the_next_run_only_after_the_one_before_ended(tmp_path: Path) -> None:
    sfn, seen = Executions(), []
    running = runner("QUEUED", sfn, tmp_path, seen)
    running.start()
    try:
        one = running.trigger("image-cicd-repo-1", push_event())
        two = running.trigger("image-cicd-repo-1", push_event())
        assert sfn.wait_started(1) == [one.execution_name]
        assert two.status == "QUEUED"
        assert two.execution_arn == ""

        sfn.end(one.execution_name)

        assert sfn.wait_started(2) == [one.execution_name, two.execution_name]
    finally:
        for name in sfn.started:
            sfn.end(name)
        running.stop()
