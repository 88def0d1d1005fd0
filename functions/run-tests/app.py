"""Run tests: built-in checks and the repository's test state machine (start, then poll)."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.ecr import EcrScanFindings
from image_cicd.aws.stepfunctions import StepFunctionsTestMachines
from image_cicd.aws.wiring import client, services
from image_cicd.promotion.checks import (
    poll_tests,
    start_tests,
)
from image_cicd.promotion.payloads import TestsTask

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context(correlation_id_path="execution")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse(event=event, model=TestsTask)
    svc = services()
    machines = StepFunctionsTestMachines(client("stepfunctions"))
    if task.action == "poll" and task.run is not None:
        run = poll_tests(task.run, machines, timeout_seconds=task.timeout_seconds)
    else:
        run = start_tests(
            task.plan,
            task.copy_,
            svc.settings.tests_for(task.plan.name),
            svc.registry,
            EcrScanFindings(client("ecr")),
            machines,
            image_uri=f"{svc.registry.host}/{task.copy_.repository}@{task.copy_.digest}",
        )
    if run.status != "RUNNING":
        svc.ledger.update_promotion(task.plan.execution, tests=run.results())
    logger.info("tests", extra={"status": run.status, "summary": run.summary})
    return run.model_dump(mode="json")
