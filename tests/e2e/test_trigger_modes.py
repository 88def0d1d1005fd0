"""TriggerMode Pipeline and Direct on the local stack (issue 8, sections 3 and 4).

Direct mode: one EventBridge rule for every DEV repository targets the promotion
state machine with an InputTransformer; a push starts a promotion with no pipeline.
Both modes keep the repository list and the tests in SSM parameters, which the
functions read (moto's SSM here).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.stacks import wait_for

from image_cicd.cli.main import main
from image_cicd.local.aws import LocalAws
from image_cicd.local.deployer import DeployError, deploy
from image_cicd.local.stack import LocalStack, deployed_stack
from image_cicd.local.trigger import transformed_input
from image_cicd.promotion.payloads import PromotionRequest

PROJECT = Path(__file__).resolve().parents[2]
REFERENCE_EVENT = Path("/work/shared/reference/ecr-push-event.json")
TESTS = {"repo-a": {"non_root": False}}


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[LocalAws]:
    with LocalAws(tmp_path / "aws") as local:
        yield local


def ssm_values(aws: LocalAws) -> dict[str, str]:
    found = aws.client("ssm").describe_parameters()["Parameters"]
    return {
        p["Name"]: aws.client("ssm").get_parameter(Name=p["Name"])["Parameter"]["Value"]
        for p in found
    }


def environment(aws: LocalAws, function: str) -> dict[str, str]:
    config = aws.client("lambda").get_function_configuration(FunctionName=function)
    return dict(config["Environment"]["Variables"])


def test_pipeline_mode_deploys_a_rule_and_a_pipeline_per_repository(aws: LocalAws) -> None:
    params = {"Repositories": "repo-a,repo-b", "TestConfig": json.dumps(TESTS)}
    deployment = deploy(aws, PROJECT, parameters=params)

    assert not [r for r in deployment.rules.values() if r.state_machine_arn]
    assert {r.pipeline for r in deployment.rules.values() if r.pipeline} == {
        "image-cicd-repo-a",
        "image-cicd-repo-b",
    }
    assert {p.execution_name_prefix for p in deployment.pipelines.values()} == {"repo-a", "repo-b"}
    assert ssm_values(aws) == {
        "/image-cicd/image-cicd/repositories": "repo-a,repo-b",
        "/image-cicd/image-cicd/test-config": json.dumps(TESTS),
    }
    run_tests = environment(aws, "image-cicd-RunTestsFunction")
    assert run_tests["TEST_CONFIG_PARAMETER"] == "/image-cicd/image-cicd/test-config"
    assert run_tests["REPOSITORIES_PARAMETER"] == "/image-cicd/image-cicd/repositories"
    notify = environment(aws, "image-cicd-NotifyFunction")
    assert not {"TEST_CONFIG", "TEST_CONFIG_PARAMETER", "REPOSITORIES"} & set(notify)


def test_direct_mode_deploys_one_rule_that_targets_the_state_machine(aws: LocalAws) -> None:
    params = {"Repositories": "repo-a,repo-b", "TriggerMode": "Direct"}
    deployment = deploy(aws, PROJECT, parameters=params)

    assert deployment.pipelines == {}
    assert not [r for r in deployment.rules.values() if r.pipeline]
    (rule,) = [r for r in deployment.rules.values() if r.state_machine_arn]
    assert rule.state_machine_arn.endswith(":stateMachine:image-cicd-promotion")
    assert rule.event_pattern["detail"]["repository-name"] == [{"prefix": "ecr-dev/"}]
    assert "ArtifactBucketName" not in deployment.outputs
    assert deployment.outputs["TriggerMode"] == "Direct"


def test_the_input_transformer_makes_a_promotion_request_of_ecrs_push_event() -> None:
    event = json.loads(REFERENCE_EVENT.read_text(encoding="utf-8"))
    paths = {"repository": "$.detail.repository-name", "digest": "$.detail.image-digest"}
    template = '{"repository": <repository>, "digest": <digest>}'

    text = transformed_input(paths, template, event)

    assert json.loads(text) == {
        "repository": "ecr-dev/repo-1",
        "digest": event["detail"]["image-digest"],
    }
    assert PromotionRequest.parse(json.loads(text)).repository == "ecr-dev/repo-1"
    # inside a JSON string the value goes in as it is (EventBridge's rule)
    assert transformed_input(paths, '{"m": "<repository> pushed"}', event) == (
        '{"m": "ecr-dev/repo-1 pushed"}'
    )


@pytest.mark.parametrize(
    ("stack_name", "parameters", "message"),
    [
        ("s" * 57, {"Repositories": "a" * 43}, "allows 100"),  # <stack>-<name> > 100
        ("s" * 71, {"Repositories": "a", "TriggerMode": "Direct"}, "allows 80"),  # -promotion
        ("image-cicd", {"Repositories": "a" * 44}, "1 to 43 characters"),
        ("image-cicd", {"TriggerMode": "Both"}, "is not one of"),
        ("image-cicd", {"TestConfig": ""}, "a JSON object"),
    ],
)
def test_names_that_cannot_fit_are_refused_before_anything_is_created(
    aws: LocalAws, stack_name: str, parameters: dict[str, str], message: str
) -> None:
    with pytest.raises(DeployError, match=message):
        deploy(aws, PROJECT, stack_name=stack_name, parameters=parameters)
    assert aws.client("dynamodb").list_tables()["TableNames"] == []


def test_the_longest_names_that_fit_are_accepted(aws: LocalAws) -> None:
    deployment = deploy(aws, PROJECT, stack_name="s" * 56, parameters={"Repositories": "a" * 43})
    (pipeline,) = deployment.pipelines.values()
    assert len(pipeline.name) == 100
    assert len(f"{pipeline.execution_name_prefix}-{'0' * 36}") == 80


# --------------------------------------------------------------------------- local stack


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    params = {"Repositories": "repo-a,repo-b", "TriggerMode": "Direct"}
    with LocalStack(tmp_path_factory.mktemp("direct"), parameters=params) as running:
        yield running


def test_direct_mode_a_push_starts_a_promotion_without_a_pipeline(direct: LocalStack) -> None:
    assert direct.runner is not None
    assert direct.registry is not None
    t = deployed_stack(direct.info)
    # the same push command as the Pipeline-mode end-to-end tests
    result = CliRunner().invoke(
        main,
        ["--state-dir", str(direct.state_dir), "push", "ecr-dev/repo-b:latest", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    pushed = json.loads(result.output)["digest"]

    runs = direct.runner.runs
    run = wait_for(lambda: next((r for r in runs if r.execution_arn), None), "a start")
    execution = t.client("stepfunctions").describe_execution(executionArn=run.execution_arn)
    assert execution["stateMachineArn"].endswith(":stateMachine:image-cicd-promotion")
    assert json.loads(execution["input"]) == {"repository": "ecr-dev/repo-b", "digest": pushed}

    # resolve-repo read the repository list from SSM and the promotion waits for TEST
    approvals = wait_for(lambda: t.ledger.list_approvals("PENDING"), "the TEST approval")
    assert [(a.execution, a.stage) for a in approvals] == [(run.execution_name, "TEST")]
