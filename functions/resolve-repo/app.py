"""Resolve repository: the execution input -> the promotion plan (digest pinned)."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.wiring import services
from image_cicd.promotion.payloads import ResolveTask
from image_cicd.promotion.steps import resolve

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context(correlation_id_path="execution")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse(event=event, model=ResolveTask)
    plan = resolve(services(), task.input, task.execution, task.started_at)
    logger.info("resolved", extra={"source": plan.source, "digest": plan.digest})
    return plan.model_dump(mode="json")
