"""The Run tests step (`promotion.checks.run_tests`): start or poll, and the ledger record
of a run that has ended. Real checks on synthetic images, a real Ledger on moto's
DynamoDB; the registry, the scan findings and the test machine are the fakes of
test_checks.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from test_checks import (
    MACHINE,
    REPO,
    FakeMachines,
    FakeScans,
    image,
    plan_and_copy,
    registry_for,
)

from image_cicd.ledger.records import CheckResult
from image_cicd.ledger.store import Ledger
from image_cicd.promotion.checks import CheckPorts, run_tests
from image_cicd.promotion.locks import Locker
from image_cicd.promotion.payloads import TestRun, TestsTask
from image_cicd.promotion.settings import Settings
from image_cicd.promotion.steps import Services
from image_cicd.registry.synthetic import SyntheticImage


def services(ledger: Ledger, img: SyntheticImage, tests: dict[str, Any]) -> Services:
    return Services(
        settings=Settings.from_env(
            {
                "REPOSITORIES": "repo-1",
                "DEV_PREFIX": "ecr-dev",
                "TEST_PREFIX": "ecr-test",
                "PROD_PREFIX": "ecr-prod",
                "LEDGER_TABLE": ledger.table_name,
                "TEST_CONFIG": json.dumps({"repo-1": tests}),
            }
        ),
        connect=lambda: registry_for(img),
        ledger=ledger,
        locker=cast(Locker, None),
        publish=lambda topic, subject, message: None,
    )


def task(img: SyntheticImage, action: str, run: TestRun | None = None) -> TestsTask:
    plan, copy = plan_and_copy(img)
    return TestsTask.model_validate(
        {
            "execution": plan.execution,
            "action": action,
            "plan": plan.model_dump(mode="json"),
            "copy": copy.model_dump(mode="json"),
            "run": None if run is None else run.model_dump(mode="json"),
            "timeout_seconds": 600,
        }
    )


@pytest.fixture
def started(ledger: Ledger) -> Ledger:
    ledger.start_promotion("exec-1", "repo-1", "sha256:" + "0" * 64, datetime.now(UTC))
    return ledger


def test_a_start_that_ends_records_the_results_on_the_promotion(started: Ledger) -> None:
    img = image(layers=1, user="root")
    machines = FakeMachines()

    run = run_tests(
        services(started, img, {"non_root": True, "state_machine_arn": MACHINE}),
        CheckPorts(scans=FakeScans(), machines=machines),
        task(img, "start"),
    )

    assert run.status == "FAILED"
    assert machines.started == []
    assert started.get_promotion("exec-1").tests == run.results()


def test_a_start_runs_the_machine_against_the_test_image_and_records_nothing_yet(
    started: Ledger,
) -> None:
    img = image(layers=1)
    machines = FakeMachines()

    run = run_tests(
        services(started, img, {"state_machine_arn": MACHINE}),
        CheckPorts(scans=FakeScans(), machines=machines),
        task(img, "start"),
    )

    assert run.status == "RUNNING"
    [(arn, _, payload)] = machines.started
    assert arn == MACHINE
    assert payload["image"] == f"registry.example/{REPO}@{img.digest}"
    assert started.get_promotion("exec-1").tests is None


def test_a_poll_looks_at_the_running_machine_and_records_the_end(started: Ledger) -> None:
    img = image(layers=1)
    machines = FakeMachines(("SUCCEEDED", "{}"))
    running = TestRun(
        passed=False,
        status="RUNNING",
        checks=[CheckResult(name="content", passed=True)],
        execution_arn=f"{MACHINE.replace('stateMachine', 'execution')}:exec-1-tests",
        poll_seconds=10,
        started_at=datetime.now(UTC).timestamp(),
    )

    run = run_tests(
        services(started, img, {"state_machine_arn": MACHINE}),
        CheckPorts(scans=FakeScans(), machines=machines),
        task(img, "poll", running),
    )

    assert machines.looked_at == [running.execution_arn]
    assert machines.started == []
    assert run.status == "PASSED"
    assert started.get_promotion("exec-1").tests == run.results()
