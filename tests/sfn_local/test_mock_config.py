"""The Step Functions Local mock configuration fits the state machines (no Docker needed)."""

from __future__ import annotations

from typing import Any

import pytest
from sfn_cases import EXPECTED, Outcome, definition, mock_config, simulate

from image_cicd.promotion import payloads

REQUIRED_CASES = {
    "Promotion": {
        "HappyPath",
        "TestRejected",
        "ProdRejected",
        "ApprovalExpired",
        "TestsFailed",
        "ImageNotFound",
        "RegistryRetried",
    },
    "Rollback": {"NothingToRollBack"},
}

CASES = [(machine, case) for machine, cases in EXPECTED.items() for case in cases]


def test_the_required_test_cases_exist_and_have_expectations() -> None:
    config = mock_config()
    assert set(config["StateMachines"]) == set(EXPECTED)
    for machine, required in REQUIRED_CASES.items():
        cases = set(config["StateMachines"][machine]["TestCases"])
        assert required <= cases
        assert cases == set(EXPECTED[machine])


@pytest.mark.parametrize("machine", sorted(EXPECTED))
def test_every_state_named_in_a_test_case_exists_and_is_a_task(machine: str) -> None:
    states: dict[str, Any] = definition(machine)["States"]
    for case, mocks in mock_config()["StateMachines"][machine]["TestCases"].items():
        for state in mocks:
            assert state in states, f"{machine}/{case}: no state {state!r}"
            assert states[state]["Type"] == "Task", f"{machine}/{case}: {state!r} is no Task"


def test_every_mocked_response_is_defined_and_used() -> None:
    config = mock_config()
    defined = set(config["MockedResponses"])
    used = {
        response
        for machine in config["StateMachines"].values()
        for mocks in machine["TestCases"].values()
        for response in mocks.values()
    }
    assert used <= defined, f"undefined: {sorted(used - defined)}"
    assert defined <= used, f"unused: {sorted(defined - used)}"


def test_mocked_lambda_responses_have_the_invoke_shape() -> None:
    for name, responses in mock_config()["MockedResponses"].items():
        for key, response in responses.items():
            assert set(response) in ({"Return"}, {"Throw"}), f"{name}[{key}]"
            if "Throw" in response:
                assert set(response["Throw"]) <= {"Error", "Cause"}
                assert response["Throw"]["Error"]


@pytest.mark.parametrize(("machine", "case"), CASES)
def test_a_test_case_covers_exactly_the_tasks_on_its_path(machine: str, case: str) -> None:
    # Given the test case's mocks / When its path is walked
    run = simulate(machine, case)
    # Then every mocked state was reached (simulate() fails on an unmocked Task)
    mocks = mock_config()["StateMachines"][machine]["TestCases"][case]
    assert run.mocked_states_used == set(mocks), (
        f"mocked but not reached: {set(mocks) - run.mocked_states_used}"
    )
    # And it ends as expected
    expected: Outcome = EXPECTED[machine][case]
    assert (run.status, run.path[-1], run.error) == (
        expected.status,
        expected.last_state,
        expected.error,
    ), run.path


@pytest.mark.parametrize("machine", sorted(EXPECTED))
def test_the_test_cases_together_visit_every_state(machine: str) -> None:
    visited = {state for case in EXPECTED[machine] for state in simulate(machine, case).path}
    assert set(definition(machine)["States"]) == visited


def test_the_happy_path_runs_the_test_poll_loop() -> None:
    run = simulate("Promotion", "HappyPath")
    assert run.path == [
        "Receive input",
        "Resolve repository",
        "Already promoted?",
        "Wait for TEST approval",
        "Copy to TEST",
        "Run tests",
        "Tests finished?",
        "Wait for tests",
        "Check tests",
        "Tests finished?",
        "Wait for PROD approval",
        "Promote to PROD",
        "Notify success",
        "Promoted",
    ]
    assert run.output["prod"]["promotion"]["version"] == "v0.15"
    assert run.output["approvals"]["prod"]["decision"] == "APPROVED"


def test_an_expired_approval_is_reported_as_expired() -> None:
    run = simulate("Promotion", "ApprovalExpired")
    assert "TEST approval expired" in run.path
    assert run.error == "ApprovalExpired"


def test_registry_errors_are_retried_before_anything_fails() -> None:
    run = simulate("Promotion", "RegistryRetried")
    assert run.status == "SUCCEEDED"
    assert "Prepare failure" not in run.path


def test_mocked_payloads_match_the_handlers_models() -> None:
    # The mocks double as examples of the payload contract: keep them parseable.
    responses = mock_config()["MockedResponses"]
    payloads.Plan.model_validate(responses["ResolvePlan"]["0"]["Return"]["Payload"])
    for name in ("CopiedToTest", "PromotedToProd"):
        payloads.StageCopy.model_validate(responses[name]["0"]["Return"]["Payload"])
    for name in ("TestsRunning", "TestsPassed", "TestsFailed"):
        payloads.TestRun.model_validate(responses[name]["0"]["Return"]["Payload"])
