"""Roll back PROD: latest -> the previous version (or a named one)."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.wiring import services
from image_cicd.promotion.payloads import RollbackTask
from image_cicd.promotion.steps import rollback_prod

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context(correlation_id_path="execution")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse(event=event, model=RollbackTask)
    given = task.input
    result = rollback_prod(
        services(), given.repository, given.to, task.execution, expected=given.from_
    )
    logger.info(result.message, extra={"repository": result.repository})
    return result.as_dict()
