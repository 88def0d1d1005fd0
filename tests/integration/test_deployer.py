"""The local deployer: what it creates is what the template declares, no more, no less."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from image_cicd.local.aws import LocalAws
from image_cicd.local.deployer import CREATED, NOT_NEEDED, DeployError, deploy
from image_cicd.local.template import expand, load_template

PROJECT = Path(__file__).resolve().parents[2]
REPOS = ["repo-a", "repo-b", "repo-c"]


@pytest.fixture
def aws(tmp_path: Path) -> Iterator[LocalAws]:
    with LocalAws(tmp_path / "aws") as local:
        yield local


def test_local_resources_equal_the_templates_supported_resources(aws: LocalAws) -> None:
    params = {"Repositories": ",".join(REPOS), "ApprovalEmail": "ops@example.com"}
    deployment = deploy(aws, PROJECT, parameters=params, api_url="http://127.0.0.1:1/")

    resources = expand(load_template(PROJECT / "template.yaml"), params)["Resources"]
    expected = {k for k, v in resources.items() if v["Type"] in CREATED}
    # conditions false: no notification address given; TriggerMode Pipeline (the default)
    skipped = {"NotificationsEmailSubscription", "DirectTriggerRule", "DirectTriggerRole"}
    assert deployment.created == expected - skipped
    assert set(deployment.skipped_by_condition) == skipped
    assert deployment.unsupported == {}
    assert set(deployment.not_needed.values()) <= set(NOT_NEEDED)
    assert deployment.created | set(deployment.not_needed) | skipped == set(resources)

    assert sorted(p.source_repository for p in deployment.pipelines.values()) == [
        f"ecr-dev/{r}" for r in REPOS
    ]
    assert {p.execution_mode for p in deployment.pipelines.values()} == {"PARALLEL"}
    sfn = aws.client("stepfunctions")
    machines = {m["name"] for m in sfn.list_state_machines()["stateMachines"]}
    assert machines == {"image-cicd-promotion", "image-cicd-rollback"}
    functions = {f["FunctionName"] for f in aws.client("lambda").list_functions()["Functions"]}
    assert functions == set(deployment.functions.values())
    assert len(functions) == 9
    ended = deployment.rules["ExecutionEndedRule"]
    assert ended.function == "image-cicd-ExecutionEndedFunction"
    assert ended.event_pattern["detail"]["stateMachineArn"] == [
        deployment.state_machines["PromotionStateMachine"]
    ]
    assert aws.client("dynamodb").list_tables()["TableNames"] == ["image-cicd-LedgerTable"]
    subs = aws.client("sns").list_subscriptions()["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", "ops@example.com")]
    env = aws.client("lambda").get_function_configuration(
        FunctionName="image-cicd-WaitForApprovalFunction"
    )["Environment"]["Variables"]
    assert env["APPROVAL_BASE_URL"] == "http://127.0.0.1:1/"
    assert "REPOSITORIES" not in env  # in an SSM parameter, read by the functions that need it
    stored = aws.client("ssm").get_parameter(Name="/image-cicd/image-cicd/repositories")
    assert stored["Parameter"]["Value"] == ",".join(REPOS)
    assert env["LEDGER_TABLE"] == "image-cicd-LedgerTable"
    assert deployment.outputs["RepositoryNames"] == ",".join(REPOS)
    assert deployment.outputs["VersionFormat"] == "v{major}.{minor}"


def test_an_unknown_resource_type_is_reported_by_name(aws: LocalAws, tmp_path: Path) -> None:
    project = tmp_path / "project"
    for part in ("functions", "statemachines", "src"):
        shutil.copytree(PROJECT / part, project / part, symlinks=True)
    text = (PROJECT / "template.yaml").read_text()
    extra = {"Resources": {"AuditQueue": {"Type": "AWS::SQS::Queue", "Properties": {}}}}
    (project / "template.yaml").write_text(
        text.replace("\nResources:\n", "\nResources:\n" + yaml.safe_dump(extra)[11:], 1)
    )

    deployment = deploy(aws, project, parameters={"Repositories": "repo-a"})

    assert deployment.unsupported == {"AuditQueue": "AWS::SQS::Queue"}
    assert "AuditQueue" not in deployment.created


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"ApprovalTimeoutSeconds": "999999"}, "above MaxValue"),
        ({"ApprovalTimeoutSeconds": "10"}, "below MinValue"),
        ({"DevPrefix": "Bad Prefix"}, "does not match"),
        ({"TestPrefix": "ecr-dev"}, "three different namespaces"),
        ({"TriggerTag": ""}, "TriggerTag=.. does not match"),
    ],
)
def test_values_that_cannot_work_are_refused_before_anything_is_created(
    aws: LocalAws, parameters: dict[str, str], message: str
) -> None:
    with pytest.raises(DeployError, match=message):
        deploy(aws, PROJECT, parameters=parameters)
    assert aws.client("dynamodb").list_tables()["TableNames"] == []
