"""`make demo`: the whole workflow on the embedded stack, start to finish.

Starts the stack, pushes an image to ecr-dev/repo-1:latest (which triggers the
pipeline), approves TEST through the approval endpoint, lets the tests run,
approves PROD, does the same for a second image, rolls PROD back, prints the state
transitions as they happen and a summary, and stops everything. The last line is
one JSON object describing the first image's promotion and the rollback.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from image_cicd.aws.operations import approve, pending_approval, start_rollback, wait_finished
from image_cicd.aws.stack import DeployedStack
from image_cicd.console.history import states_of
from image_cicd.local.stack import LocalStack, deployed_stack
from image_cicd.local.trigger import PipelineRunner
from image_cicd.promotion.versions import read_stage
from image_cicd.registry.synthetic import build_image, push_image
from image_cicd.stages import DESTINATIONS

NAME = "repo-1"
DEV, TEST, PROD = f"ecr-dev/{NAME}", f"ecr-test/{NAME}", f"ecr-prod/{NAME}"
APPROVER = "demo@example.com"


class Watch(threading.Thread):
    """Prints each state of an execution as it is entered and as it ends."""

    def __init__(self, t: DeployedStack, arn: str, started: float) -> None:
        super().__init__(daemon=True)
        self.sfn = t.client("stepfunctions")
        self.arn, self.started = arn, started
        self.done = threading.Event()
        self.transitions = 0

    def run(self) -> None:
        desc = self.sfn.describe_execution(executionArn=self.arn)
        machine = self.sfn.describe_state_machine(stateMachineArn=desc["stateMachineArn"])
        definition = json.loads(machine["definition"])
        shown: dict[str, str] = {}
        while True:
            status = self.sfn.describe_execution(executionArn=self.arn)["status"]
            events = self.sfn.get_execution_history(executionArn=self.arn, maxResults=1000)
            states, path = states_of(definition, events["events"], status)
            self.transitions = len(path)
            for name in dict.fromkeys(path):
                state = states[name]
                if shown.get(name) != state.status:
                    shown[name] = state.status
                    took = f" ({state.seconds:.1f} s)" if state.seconds is not None else ""
                    note = f" {state.error}" if state.error else ""
                    _say(f"    {self.clock()}  {name:<24} {state.status}{took}{note}")
            if status != "RUNNING" or self.done.is_set():
                return
            time.sleep(0.15)

    def clock(self) -> str:
        return f"+{time.perf_counter() - self.started:5.1f}s"


def _say(text: str) -> None:
    print(text, flush=True)


def _next_run(runner: PipelineRunner, seen: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(runner.runs) > seen and runner.runs[seen].execution_arn:
            return runner.runs[seen].execution_arn
        time.sleep(0.05)
    raise SystemExit("the push did not start the pipeline")


def promote_one(
    stack: LocalStack, t: DeployedStack, n: int, started: float, watches: list[Watch]
) -> tuple[str, str, dict[str, Any]]:
    assert stack.runner is not None
    image = build_image(
        layers=3, layer_size=1_000_000, labels={"org.opencontainers.image.version": str(n)}
    )
    seen = len(stack.runner.runs)
    push_image(t.registry, DEV, image, tags=["latest"])
    _say(f"\n[{n}] pushed {DEV}:latest  {image.digest}")
    arn = _next_run(stack.runner, seen)
    execution = arn.rsplit(":", 1)[-1]
    _say(f"    pipeline started {execution}")
    watch = Watch(t, arn, started)
    watches.append(watch)
    watch.start()
    for stage in DESTINATIONS:
        approval = pending_approval(t, execution, wait_seconds=60)
        if approval is None:
            raise SystemExit(f"{execution}: no {stage} approval request")
        _, result = approve(t, execution, "APPROVED", APPROVER, f"demo approves {stage}")
        _say(f"    {watch.clock()}  approved {stage} on the approval page (HTTP {result.status})")
    desc = wait_finished(t, arn)
    watch.join(timeout=5)
    if desc["status"] != "SUCCEEDED":
        raise SystemExit(f"{execution} ended {desc['status']}: {desc.get('error')}")
    return image.digest, execution, json.loads(desc["output"])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="image-cicd-demo-") as tmp:
        _say("starting the embedded stack (registry, moto Step Functions/Lambda/DynamoDB/SNS) ...")
        setup = time.perf_counter()
        with LocalStack(Path(tmp), parameters={"Repositories": f"{NAME},repo-2"}) as stack:
            info = stack.info
            _say(
                f"stack up in {time.perf_counter() - setup:.1f} s: console {info.console_url}  "
                f"registry {info.registry_url}"
            )
            t = deployed_stack(info)
            started = time.perf_counter()
            watches: list[Watch] = []
            first, first_execution, first_output = promote_one(stack, t, 1, started, watches)
            promote_one(stack, t, 2, started, watches)
            _say(f"\n[3] rolling back {PROD}")
            arn = start_rollback(t, PROD)
            watch = Watch(t, arn, started)
            watches.append(watch)
            watch.start()
            desc = wait_finished(t, arn)
            watch.join(timeout=5)
            back = json.loads(desc.get("output") or "{}").get("rollback", {})
            _say(f"    {back.get('message', desc.get('error'))}")
            seconds = time.perf_counter() - started
            _say("\nWhat each repository holds now:")
            for repository in (DEV, TEST, PROD):
                state = read_stage(t.registry, repository, t.scheme)
                versions = "  ".join(f"{v}={state.versions[v][7:19]}" for v in state.ordered())
                latest = state.current or (state.latest or "-")[7:19]
                _say(f"  {repository:<17} latest -> {latest:<12} {versions or '(no versions)'}")
            promotion = t.ledger.get_promotion(first_execution)
            _say(
                f"\nLedger for image 1: outcome {promotion.outcome}; approvals: "
                + ", ".join(f"{a.stage} by {a.approver}" for a in promotion.approvals)
            )
            transitions = sum(w.transitions for w in watches)
            _say(
                f"Flow took {seconds:.1f} s without the stack's start-up: {transitions} state "
                f"transitions, {seconds / transitions:.2f} s each on average (approvals included)."
            )
            test_copy = first_output["test"]["copy"]
            prod = first_output["prod"]["promotion"]
            print(
                json.dumps(
                    {
                        "source": {"repository": DEV, "digest": first},
                        "test": {
                            "repository": test_copy["repository"],
                            "version": test_copy["version"],
                            "digest": test_copy["digest"],
                        },
                        "prod": {
                            "repository": prod["repository"],
                            "version": prod["version"],
                            "digest": prod["digest"],
                        },
                        "rollback": {"from": back.get("from"), "to": back.get("to")},
                        "seconds": round(seconds, 2),
                    }
                )
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
