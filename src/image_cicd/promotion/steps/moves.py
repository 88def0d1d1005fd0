"""The steps that move an image or `latest`: the copy to TEST, the promotion to PROD and
the rollback of PROD, each release recorded once."""

from __future__ import annotations

from image_cicd.ledger.records import Release, ReleaseKind
from image_cicd.ledger.store import Ledger
from image_cicd.promotion.errors import BadInput
from image_cicd.promotion.payloads import Plan, StageCopy
from image_cicd.promotion.steps.services import Services, read_existing, utc_now
from image_cicd.promotion.versions import (
    LatestMoved,
    Rollback,
    apply_rollback,
    plan_rollback,
    promote,
)
from image_cicd.stages import Destination


def _release_history(
    ledger: Ledger, repository: str, execution: str
) -> tuple[Release | None, bool]:
    """A PROD repository's newest release, and whether ``execution`` recorded one of the
    recent ones (a retried step finds its own move recorded and records it only once)."""
    recent = ledger.releases(repository, limit=20)
    newest = recent[0] if recent else None
    return newest, any(r.execution == execution for r in recent)


def _record_release(
    ledger: Ledger, repository: str, version: str, digest: str, execution: str, kind: ReleaseKind
) -> None:
    """Record that ``execution`` moved ``repository``'s `latest` to ``version`` now."""
    ledger.record_release(
        Release(
            repository=repository,
            version=version,
            digest=digest,
            at=utc_now(),
            execution=execution,
            kind=kind,
        )
    )


def copy_to_stage(
    services: Services, plan: Plan, stage: Destination, *, workers: int = 4
) -> StageCopy:
    """DEV@digest -> TEST, or TEST@digest -> PROD: exact bytes, a version, `latest`."""
    source, target = (plan.source, plan.test) if stage == "TEST" else (plan.test, plan.prod)
    read_existing(services.registry, source, plan.digest, f"before the copy to {stage}")
    result = promote(
        services.registry,
        source,
        plan.digest,
        services.registry,
        target,
        locker=services.locker,
        scheme=services.scheme,
        workers=workers,
    )
    copied = StageCopy(
        repository=target,
        digest=result.digest,
        version=result.version,
        new_version=result.new_version,
        latest_moved=result.latest_moved,
        previous_version=result.previous_version,
        blobs_present=result.copy.blobs_present,
        blobs_mounted=result.copy.blobs_mounted,
        blobs_copied=result.copy.blobs_copied,
        bytes_moved=result.copy.bytes_moved,
        mounts_refused=result.copy.mounts_refused,
        mount_refused_reason=result.copy.mount_refused_reason,
        seconds=result.copy.seconds,
    )
    if stage == "TEST":
        services.ledger.update_promotion(plan.execution, test_version=result.version)
    else:
        # A retry of this step after an attempt that died once `latest` had moved finds
        # it moved already (latest_moved is False) with no release saying so: the
        # newest release is of another digest. That move was this execution's.
        services.ledger.update_promotion(plan.execution, prod_version=result.version)
        newest, recorded = _release_history(services.ledger, target, plan.execution)
        unrecorded = result.previous_digest == plan.digest and (
            newest is None or newest.digest != plan.digest
        )
        if (result.latest_moved or unrecorded) and not recorded:
            _record_release(
                services.ledger, target, result.version, result.digest, plan.execution, "PROMOTION"
            )
    return copied


def rollback_prod(
    services: Services,
    repository: str,
    to: str | None,
    execution: str,
    *,
    expected: str | None = None,
) -> Rollback:
    """Move PROD's `latest` one version back (or to `to`) and record the release.

    `expected` is where the caller saw `latest` (the input's `from`): if PROD is no
    longer there, LatestMoved and nothing changes. Planning, moving and recording
    happen under the repository's lease, so rollbacks started together go one after
    the other and each release record is one move. The plan (from which version to
    which) is fixed in the ledger on the first attempt, so a retried attempt applies
    the same move instead of going one version further back.
    """
    stage, _name = services.settings.split(repository)
    if stage != "PROD":
        raise BadInput(f"{repository} is a {stage} repository: only PROD is rolled back")
    ledger = services.ledger
    with services.locker.hold(repository) as lease:
        plan = ledger.rollback_plan(execution)
        if plan is None:
            plan = ledger.save_rollback_plan(
                execution,
                plan_rollback(
                    services.registry, repository, to=to, expected=expected, scheme=services.scheme
                ),
            )
        result = apply_rollback(services.registry, plan, lease)
        newest, recorded = _release_history(ledger, repository, execution)
        if recorded:
            return result
        # `latest` was at the target already, and this execution recorded no move: its
        # earlier attempt moved it and died before recording, unless the newest
        # release is that move by another execution (which also planned from there).
        if not result.moved and newest is not None and newest.digest == plan.to_digest:
            raise LatestMoved(
                f"{repository}:latest was moved to {plan.to_version} by {newest.execution}; "
                "nothing was changed"
            )
        lease.check()
        _record_release(ledger, repository, result.to_version, result.digest, execution, "ROLLBACK")
    return result
