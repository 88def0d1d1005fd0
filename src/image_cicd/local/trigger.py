"""The trigger path: registry notification -> ECR push event -> rule -> pipeline.

On AWS, ECR emits an "ECR Image Action" event for each push, an EventBridge rule
(from the template) matches pushes of the trigger tag to a DEV repository, and
starts that repository's CodePipeline: its ECR source action pins the digest in
`imageDetail.json`, and its Step Functions action starts the promotion with that
file as input, each execution at once and on its own (PARALLEL). Here the registry's notification
webhook feeds the same rule patterns, and `PipelineRunner` does what the two actions
do. With TriggerMode Direct there is no pipeline: the one rule's target is the
promotion state machine, started with the rule's InputTransformer output.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from image_cicd.local.deployer import ACCOUNT, REGION, Pipeline, Rule
from image_cicd.registry.media import MANIFEST_TYPES

log = logging.getLogger(__name__)


def ecr_events(notification: Mapping[str, Any], registry_host: str) -> list[dict[str, Any]]:
    """ECR "ECR Image Action" events for the manifest pushes in a registry notification.

    Blob pushes, pulls and mounts are not image pushes and produce nothing.
    """
    found = []
    for event in notification.get("events", []):
        target = event.get("target") or {}
        if event.get("action") != "push" or target.get("mediaType") not in MANIFEST_TYPES:
            continue
        detail: dict[str, Any] = {
            "result": "SUCCESS",
            "repository-name": target.get("repository"),
            "image-digest": target.get("digest"),
            "action-type": "PUSH",
            "manifest-media-type": target.get("mediaType"),
        }
        if target.get("tag"):
            detail["image-tag"] = target["tag"]
        found.append(
            {
                "version": "0",
                "id": event.get("id") or str(uuid.uuid4()),
                "detail-type": "ECR Image Action",
                "source": "aws.ecr",
                "account": ACCOUNT,
                "time": (event.get("timestamp") or datetime.now(UTC).isoformat())[:19] + "Z",
                "region": REGION,
                "resources": [],
                "detail": detail,
                "image-size": target.get("size", 0),
                "registry-host": registry_host,
            }
        )
    return found


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge pattern matching: nested fields, value lists, prefix, anything-but,
    exists."""
    for key, expected in pattern.items():
        present = key in event
        value = event.get(key)
        if isinstance(expected, Mapping):
            if not isinstance(value, Mapping) or not matches(expected, value):
                return False
            continue
        values = value if isinstance(value, list) else [value]
        if not any(_match_one(rule, v, present) for rule in expected for v in values):
            return False
    return True


def _match_one(rule: Any, value: Any, present: bool) -> bool:
    if not isinstance(rule, Mapping):
        return present and rule == value
    if "exists" in rule:
        return bool(rule["exists"]) == present
    if not present:
        return False
    if "prefix" in rule:
        return isinstance(value, str) and value.startswith(rule["prefix"])
    if "anything-but" in rule:
        excluded = rule["anything-but"]
        excluded = excluded if isinstance(excluded, list) else [excluded]
        return value not in excluded
    return False


def transformed_input(paths: Mapping[str, str], template: str, event: Mapping[str, Any]) -> str:
    """EventBridge's InputTransformer: each `<name>` of the template is the value at
    `paths[name]` (`$.detail.image-digest`); inside a JSON template and outside its
    strings a value is inserted as JSON (a string gets its quotes)."""
    values: dict[str, Any] = {}
    for name, path in paths.items():
        value: Any = event
        for part in path.removeprefix("$.").split(".") if path != "$" else []:
            value = value.get(part) if isinstance(value, Mapping) else None
        values[name] = value
    as_json = template.lstrip().startswith("{")
    out, in_string, i = [], False, 0
    while i < len(template):
        char = template[i]
        match = re.match(r"<([A-Za-z0-9_.-]+)>", template[i:])
        if match and match.group(1) in values:
            value = values[match.group(1)]
            if as_json and not in_string:
                out.append(json.dumps(value))
            else:
                out.append("" if value is None else str(value))
            i += match.end()
            continue
        if char == '"' and (i == 0 or template[i - 1] != "\\"):
            in_string = not in_string
        out.append(char)
        i += 1
    return "".join(out)


def deliver(rules: Iterable[Rule], event: Mapping[str, Any], lambda_client: Any) -> list[str]:
    """EventBridge for the events of the local AWS services: each rule that matches
    and targets a Lambda function invokes it asynchronously with the event, as
    EventBridge does. Returns the names of the functions invoked."""
    invoked = []
    for rule in rules:
        if rule.function and matches(rule.event_pattern, event):
            lambda_client.invoke(
                FunctionName=rule.function, InvocationType="Event", Payload=json.dumps(event)
            )
            invoked.append(rule.function)
    return invoked


def image_detail(event: Mapping[str, Any]) -> dict[str, Any]:
    """What CodePipeline's ECR source action writes as `imageDetail.json`."""
    detail = event["detail"]
    repository, digest = detail["repository-name"], detail["image-digest"]
    pushed = datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    return {
        "ImageSizeInBytes": str(event.get("image-size", 0)),
        "ImageDigest": digest,
        "Version": "1.0",
        "ImagePushedAt": pushed,
        "RegistryId": ACCOUNT,
        "RepositoryName": repository,
        "ImageURI": f"{event.get('registry-host', '')}/{repository}@{digest}",
        "ImageTags": [detail["image-tag"]] if detail.get("image-tag") else [],
    }


@dataclass
class PipelineRun:
    pipeline: str
    run_id: str
    execution_name: str
    execution_arn: str = ""
    status: str = "QUEUED"
    queued_at: float = field(default_factory=time.time)


class PipelineRunner:
    """Runs each pipeline's executions as its ExecutionMode says.

    PARALLEL (the template's): every run starts its execution at once, independently
    of the others. QUEUED: one after another, in order. (SUPERSEDED, not used by the
    template, runs like QUEUED here: on AWS too it never interrupts an action in
    progress.)
    """

    def __init__(
        self,
        pipelines: Mapping[str, Pipeline],
        rules: Mapping[str, Rule],
        stepfunctions: Any,
        state_dir: Path,
        *,
        on_run: Callable[[PipelineRun], None] | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        self.pipelines = {p.name: p for p in pipelines.values()}
        self.rules = list(rules.values())
        self.sfn = stepfunctions
        self.state_dir = state_dir
        self.on_run = on_run or (lambda _run: None)
        self.poll_seconds = poll_seconds
        self.runs: list[PipelineRun] = []
        self._queues: dict[str, queue.Queue[PipelineRun | None]] = {}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> None:
        for name in self.pipelines:
            q: queue.Queue[PipelineRun | None] = queue.Queue()
            self._queues[name] = q
            thread = threading.Thread(target=self._work, args=(name, q), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        for q in self._queues.values():
            q.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def notify(self, notification: Mapping[str, Any], registry_host: str) -> list[PipelineRun]:
        """Feed a registry notification; returns the pipeline runs it queued."""
        queued = []
        for event in ecr_events(notification, registry_host):
            for rule in self.rules:
                if not matches(rule.event_pattern, event):
                    continue
                if rule.pipeline in self.pipelines:
                    queued.append(self.trigger(rule.pipeline, event))
                elif rule.state_machine_arn:
                    queued.append(self.start_direct(rule, event))
        return queued

    def start_direct(self, rule: Rule, event: Mapping[str, Any]) -> PipelineRun:
        """TriggerMode Direct: the rule's target is the state machine itself.

        EventBridge starts the execution with the InputTransformer's output and no name
        (Step Functions then names it with a UUID): no pipeline, nothing queued.
        """
        run_id = str(uuid.uuid4())
        run = PipelineRun(pipeline=rule.name, run_id=run_id, execution_name=run_id)
        self.runs.append(run)
        try:
            started = self.sfn.start_execution(
                stateMachineArn=rule.state_machine_arn,
                name=run.execution_name,
                input=transformed_input(rule.input_paths, rule.input_template, event),
            )
            run.execution_arn = started["executionArn"]
            run.status = "Started"
        except Exception as exc:  # as on AWS: the event is dropped, the rule goes on
            log.warning("rule %s could not start %s: %s", rule.name, rule.state_machine_arn, exc)
            run.status = "Failed"
        self.on_run(run)
        return run

    def trigger(self, pipeline_name: str, event: Mapping[str, Any]) -> PipelineRun:
        """The source action: pin the pushed digest now; queue the invoke action."""
        pipeline = self.pipelines[pipeline_name]
        run_id = str(uuid.uuid4())
        name = f"{pipeline.execution_name_prefix}-{run_id}"[:80]
        run = PipelineRun(pipeline=pipeline_name, run_id=run_id, execution_name=name)
        folder = self.state_dir / "pipelines" / pipeline_name / run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / pipeline.input_file).write_text(json.dumps(image_detail(event), indent=2))
        self.runs.append(run)
        self._queues[pipeline_name].put(run)
        self.on_run(run)
        return run

    def _work(self, name: str, q: queue.Queue[PipelineRun | None]) -> None:
        parallel = self.pipelines[name].execution_mode == "PARALLEL"
        while not self._stopping.is_set():
            run = q.get()
            if run is None:
                return
            if parallel:
                thread = threading.Thread(target=self._run, args=(name, run), daemon=True)
                thread.start()
                self._threads.append(thread)
            else:
                self._run(name, run)

    def _run(self, name: str, run: PipelineRun) -> None:
        """The Step Functions action of one run: start the execution, follow it."""
        pipeline = self.pipelines[name]
        folder = self.state_dir / "pipelines" / name / run.run_id
        try:
            started = self.sfn.start_execution(
                stateMachineArn=pipeline.state_machine_arn,
                name=run.execution_name,
                input=(folder / pipeline.input_file).read_text(),
            )
            run.execution_arn = started["executionArn"]
            run.status = "InProgress"
            self.on_run(run)
            while not self._stopping.is_set():
                status = self.sfn.describe_execution(executionArn=run.execution_arn)["status"]
                if status != "RUNNING":
                    run.status = "Succeeded" if status == "SUCCEEDED" else "Failed"
                    break
                time.sleep(self.poll_seconds)
        except Exception as exc:  # a pipeline run fails; the runner goes on
            log.warning("pipeline %s run %s failed: %s", name, run.run_id, exc)
            run.status = "Failed"
        self.on_run(run)
