"""Notify: record the outcome in the ledger and publish it, with the reason."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.wiring import services
from image_cicd.promotion.payloads import NotifyTask
from image_cicd.promotion.steps import finish

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context(correlation_id_path="execution")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse(event=event, model=NotifyTask)
    sent = finish(
        services(), task.workflow, task.execution, task.outcome, task.details, task.failure
    )
    metrics.add_metric(
        name=f"{task.workflow.title()}{task.outcome.title()}", unit=MetricUnit.Count, value=1
    )
    if "duration_seconds" in sent:
        metrics.add_metric(
            name="PromotionDuration", unit=MetricUnit.Seconds, value=sent["duration_seconds"]
        )
    logger.info("notified", extra={"outcome": task.outcome, "subject": sent["subject"]})
    return sent
