"""Promote to PROD: TEST@digest -> PROD, exact bytes, a new version tag, latest moved."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from image_cicd.aws.wiring import services
from image_cicd.promotion.payloads import CopyTask
from image_cicd.promotion.steps import copy_to_stage

logger, tracer, metrics = Logger(), Tracer(), Metrics()


@logger.inject_lambda_context(correlation_id_path="execution")
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse(event=event, model=CopyTask)
    promoted = copy_to_stage(services(), task.plan, "PROD")
    metrics.add_metric(name="BlobsMounted", unit=MetricUnit.Count, value=promoted.blobs_mounted)
    metrics.add_metric(name="BytesCopied", unit=MetricUnit.Bytes, value=promoted.bytes_moved)
    if promoted.mounts_refused:
        logger.warning(
            "streamed instead of mounting",
            extra={"blobs": promoted.mounts_refused, "reason": promoted.mount_refused_reason},
        )
    logger.info("promoted", extra={"repository": promoted.repository, "version": promoted.version})
    return promoted.model_dump(mode="json")
