"""The run-tests handler (functions/run-tests/app.py): parse the task, call the core, return JSON.

Uses the handler loader and payload fixtures of test_handlers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import test_handlers as kit
from test_handlers import (
    CONTEXT,
    COPY,
    PLAN,
    RUNNING,
    TEST_MACHINE,
    FakeLedger,
    Recorder,
    as_json,
    fake_services,
    install,
    sample,
)

from image_cicd.aws.ecr import EcrScanFindings
from image_cicd.aws.stepfunctions import StepFunctionsTestMachines
from image_cicd.promotion.payloads import Plan, StageCopy, TestRun
from image_cicd.promotion.settings import RepositoryTests

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

load = kit.load


# ---------------------------------------------------------------- run-tests


def run_tests_event(action: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "execution": "exec-1",
        "action": action,
        "plan": PLAN,
        "copy": COPY.model_dump(mode="json"),
        "timeout_seconds": "1800",  # "${TestTimeoutSeconds}" arrives as text
    }
    if action == "poll":
        payload["run"] = RUNNING.model_dump(mode="json")
    return sample(f"run-tests-{action}", payload)


def test_run_tests_start_runs_the_repository_checks_against_the_test_image(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("run-tests")
    ledger = FakeLedger()
    svc = fake_services(ledger)
    install(module, monkeypatch, svc)
    start_tests, poll_tests = Recorder(RUNNING), Recorder(RUNNING)
    monkeypatch.setattr(module, "start_tests", start_tests)
    monkeypatch.setattr(module, "poll_tests", poll_tests)
    event = run_tests_event("start")

    result = module.lambda_handler(event, CONTEXT)

    (plan, copy, config, registry, scans, machines), kwargs = start_tests.only_call
    assert plan == Plan.model_validate(event["plan"])
    assert copy == StageCopy.model_validate(event["copy"])
    assert config == RepositoryTests(non_root=True, state_machine_arn=TEST_MACHINE)
    assert registry is svc.registry
    assert isinstance(scans, EcrScanFindings)
    assert scans._ecr is module.client("ecr")
    assert isinstance(machines, StepFunctionsTestMachines)
    assert machines._sfn is module.client("stepfunctions")
    assert kwargs == {"image_uri": f"127.0.0.1:5000/{copy.repository}@{copy.digest}"}
    assert poll_tests.calls == []
    assert ledger.updates == []  # still running: nothing to record yet
    assert as_json(result) == RUNNING.model_dump(mode="json")


def test_run_tests_start_records_finished_results_in_the_ledger(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("run-tests")
    ledger = FakeLedger()
    install(module, monkeypatch, fake_services(ledger))
    passed = RUNNING.model_copy(
        update={"status": "PASSED", "passed": True, "execution_arn": None, "duration_seconds": 1.5}
    )
    monkeypatch.setattr(module, "start_tests", Recorder(passed))
    event = run_tests_event("start")

    result = module.lambda_handler(event, CONTEXT)

    assert ledger.updates == [(event["plan"]["execution"], {"tests": passed.results()})]
    assert result["status"] == "PASSED"


def test_run_tests_poll_looks_at_the_running_machine_with_the_timeout(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load("run-tests")
    ledger = FakeLedger()
    install(module, monkeypatch, fake_services(ledger))
    failed = RUNNING.model_copy(
        update={
            "status": "FAILED",
            "summary": "failed: test state machine (timed_out: still running after 1800 s)",
        }
    )
    start_tests, poll_tests = Recorder(RUNNING), Recorder(failed)
    monkeypatch.setattr(module, "start_tests", start_tests)
    monkeypatch.setattr(module, "poll_tests", poll_tests)
    event = run_tests_event("poll")

    result = module.lambda_handler(event, CONTEXT)

    (run, machines), kwargs = poll_tests.only_call
    assert run == TestRun.model_validate(event["run"])
    assert isinstance(machines, StepFunctionsTestMachines)
    assert kwargs == {"timeout_seconds": int(event.get("timeout_seconds", 3600))}
    assert start_tests.calls == []
    assert ledger.updates == [(event["plan"]["execution"], {"tests": failed.results()})]
    assert as_json(result) == failed.model_dump(mode="json")
