"""Execution ARNs from a state machine's ARN and an execution name."""

from __future__ import annotations

from image_cicd.aws.stepfunctions import execution_arn_for


def test_an_execution_arn_is_the_machines_arn_with_execution_and_the_name() -> None:
    machine = "arn:aws-us-gov:states:us-gov-west-1:123456789012:stateMachine:s-promotion"
    assert execution_arn_for(machine, "repo-1-0a1b") == (
        "arn:aws-us-gov:states:us-gov-west-1:123456789012:execution:s-promotion:repo-1-0a1b"
    )
