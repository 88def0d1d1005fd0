"""Run tests: built-in checks and the repository's test state machine (start, then poll)."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.wiring import check_ports, services
from image_cicd.promotion.checks import run_tests
from image_cicd.promotion.payloads import TestsTask

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context(correlation_id_path="execution")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse(event=event, model=TestsTask)
    run = run_tests(services(), check_ports(), task)
    logger.info("tests", extra={"status": run.status, "summary": run.summary})
    return run.model_dump(mode="json")
