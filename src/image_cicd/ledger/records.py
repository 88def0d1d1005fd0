"""Typed models shared by the core, the handlers and the CLI.

Times are timezone-aware and normalised to UTC; in JSON they are ISO-8601 strings
with a fixed width (``2026-01-31T12:00:00.000000Z``) so they sort as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
)

from image_cicd.stages import Destination

ApprovalStatus = Literal["PENDING", "APPROVED", "REJECTED", "EXPIRED", "SUPERSEDED"]
Decision = Literal["APPROVED", "REJECTED"]
Outcome = Literal[
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "REJECTED",
    "EXPIRED",
    "SUPERSEDED",
    "ALREADY_PROMOTED",
    "ABORTED",  # stopped (StopExecution): no Catch ran, see workflow.execution_ended
    "TIMED_OUT",
]
ReleaseKind = Literal["PROMOTION", "ROLLBACK"]


def iso(value: datetime) -> str:
    """Fixed-width ISO-8601 UTC text (sorts lexicographically in time order)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime; pass a timezone-aware one")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(iso, return_type=str, when_used="json"),
]


class FrozenModel(BaseModel):
    """The base of the records and the task payloads: immutable, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ImageRef(FrozenModel):
    """An image a stage runs: its digest and version tag (if it has one)."""

    digest: str
    version: str | None = None


class CheckResult(FrozenModel):
    name: str
    passed: bool
    detail: str = ""


class TestResults(FrozenModel):
    """Summary of the tests run against the TEST image."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    passed: bool
    summary: str = ""
    checks: list[CheckResult] = Field(default_factory=list)
    duration_seconds: float | None = None


class ApprovalRequest(FrozenModel):
    """One human approval a promotion waits for.

    ``repository`` is the source stage repository (``ecr-dev/repo-1``),
    ``target_repository`` the one the image goes to, ``version`` the version tag it
    will get there and ``current`` what the target stage runs now. ``version`` is
    certain only when ``version_assigned`` (the digest has it there already, and a
    promotion keeps it); otherwise it is the next version as of the request, an
    estimate: versions are assigned in copy order under the repository's lock, so a
    concurrent promotion copied first takes it. The Step
    Functions task token and the CSRF secret are secrets: they never appear in
    ``repr``/``str`` or in ``model_dump(mode="json")``.
    """

    approval_id: str
    execution: str
    stage: Destination
    repository: str
    target_repository: str
    digest: str
    version: str | None = None
    version_assigned: bool = False
    current: ImageRef | None = None
    tests: TestResults | None = None
    status: ApprovalStatus = "PENDING"
    created_at: UtcDatetime
    expires_at: UtcDatetime
    task_token: SecretStr = Field(repr=False)
    csrf_secret: SecretStr = Field(repr=False)
    decided_by: str | None = None
    decided_at: UtcDatetime | None = None
    comment: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    superseded_by: str | None = None  # the newer execution that superseded this request
    superseded_by_digest: str | None = None

    def is_expired(self, now: datetime) -> bool:
        return self.status == "EXPIRED" or (self.status == "PENDING" and now >= self.expires_at)


class ApprovalRecord(FrozenModel):
    """A decision as kept in the promotion's audit trail."""

    approval_id: str
    stage: Destination
    decision: ApprovalStatus
    approver: str | None = None
    comment: str | None = None
    decided_at: UtcDatetime | None = None


class Promotion(FrozenModel):
    """One run of the promotion workflow for one image.

    ``repository`` is the repository *name* without stage prefix (``repo-1``).
    """

    execution: str
    repository: str
    digest: str
    started_at: UtcDatetime
    test_version: str | None = None
    prod_version: str | None = None
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    tests: TestResults | None = None
    outcome: Outcome = "RUNNING"
    reason: str | None = None
    finished_at: UtcDatetime | None = None


class Release(FrozenModel):
    """What a PROD repository's ``latest`` was moved to, when and why."""

    repository: str  # the PROD repository, e.g. ecr-prod/repo-1
    version: str
    digest: str
    at: UtcDatetime
    execution: str | None = None
    kind: ReleaseKind = "PROMOTION"


@dataclass(frozen=True)
class RollbackPlan:
    """Where `latest` is and where a rollback moves it: fixed once, applied as often
    as a retry needs, with the same result."""

    repository: str
    from_version: str | None
    from_digest: str
    to_version: str
    to_digest: str
