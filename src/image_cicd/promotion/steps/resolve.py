"""Resolve repository: the promotion's input becomes its plan, the digest pinned."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from image_cicd.promotion.errors import BadInput
from image_cicd.promotion.payloads import ImageFacts, Plan, PromotionRequest, already_promoted
from image_cicd.promotion.steps.services import Services, current_image, read_existing, utc_now


def resolve(
    services: Services, raw_input: Any, execution: str, started_at: datetime | None = None
) -> Plan:
    """Input -> plan; the digest is pinned here and is the only thing ever copied."""
    request = PromotionRequest.parse(raw_input)
    settings = services.settings
    stage, name = settings.split(request.repository)
    if stage != "DEV":
        raise BadInput(
            f"{request.repository} is a {stage} repository: promotions start from "
            f"{settings.stage_repository(name, 'DEV')}"
        )
    image = read_existing(services.registry, request.repository, request.digest, "when resolving")
    test, prod = settings.stage_repository(name, "TEST"), settings.stage_repository(name, "PROD")
    test_now, prod_now = current_image(services, test), current_image(services, prod)
    in_flight = (
        test_now is not None
        and test_now.digest == request.digest
        and any(
            p.digest == request.digest and p.outcome == "RUNNING" and p.execution != execution
            for p in services.ledger.promotions_for(name)
        )
    )
    held = already_promoted(request.digest, test_now, prod_now, in_flight=in_flight)
    plan = Plan(
        execution=execution,
        name=name,
        digest=request.digest,
        source=request.repository,
        test=test,
        prod=prod,
        image=ImageFacts(
            media_type=image.root.media_type, platforms=image.root.platforms, size=image.size
        ),
        test_now=test_now,
        prod_now=prod_now,
        approval_timeout_seconds=settings.approval_timeout_seconds,
        already_promoted=held,
    )
    services.ledger.start_promotion(execution, name, request.digest, started_at or utc_now())
    if held is not None:  # ends quietly: no approval request, no notification
        runs = prod_now if held == "PROD" else test_now
        version = runs.version if runs is not None and runs.version else "untagged"
        services.ledger.finish_promotion(
            execution,
            "ALREADY_PROMOTED",
            f"{held} already runs {request.digest} as {version}",
            now=utc_now(),
        )
    return plan
