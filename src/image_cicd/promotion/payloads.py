"""What the promotion steps pass each other through the state machine (typed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from image_cicd.ledger.records import FrozenModel, ImageRef, Outcome, TestResults
from image_cicd.promotion.errors import BadInput
from image_cicd.registry.media import is_digest
from image_cicd.stages import Destination


class PromotionRequest(FrozenModel):
    """Where a promotion starts: `{"repository", "digest"}` or CodePipeline's
    `imageDetail.json` (`RepositoryName`, `ImageDigest`)."""

    repository: str
    digest: str

    @classmethod
    def parse(cls, raw: Any) -> PromotionRequest:
        if not isinstance(raw, dict):
            raise BadInput("the input must be a JSON object")
        repository = raw.get("repository") or raw.get("RepositoryName")
        digest = raw.get("digest") or raw.get("ImageDigest")
        if not repository or not isinstance(repository, str):
            raise BadInput(
                'missing "repository": start with {"repository": "ecr-dev/repo-1", '
                '"digest": "sha256:..."} or an imageDetail.json'
            )
        if not digest:
            raise BadInput(f"missing digest for {repository}: promotions are pinned by digest")
        if not isinstance(digest, str) or not is_digest(digest):
            raise BadInput(f"{digest!r} is not a sha256 digest")
        return cls(repository=repository, digest=digest)


class ImageFacts(FrozenModel):
    media_type: str
    platforms: list[str] = Field(default_factory=list)
    size: int


class Plan(FrozenModel):
    """The resolved promotion: every repository, the pinned digest, the image facts."""

    execution: str
    name: str
    digest: str
    source: str
    test: str
    prod: str
    image: ImageFacts
    test_now: ImageRef | None = None
    prod_now: ImageRef | None = None
    approval_timeout_seconds: int
    already_promoted: Destination | None = None  # the stage whose `latest` is this digest


def already_promoted(
    digest: str, test_now: ImageRef | None, prod_now: ImageRef | None, *, in_flight: bool
) -> Destination | None:
    """The stage that makes a promotion of `digest` add nothing, or None.

    PROD when PROD runs it now (its `latest`): the run CodePipeline starts by itself
    when a pipeline is created, a re-run, a re-push of the same image. TEST when TEST
    runs it and another promotion of it is under way (`in_flight`); TEST alone does
    not count, so an image rejected for PROD, or whose PROD approval expired, can be
    promoted again. Only `latest` counts, not an older version tag, so an image
    rolled back from can be promoted again.
    """
    if prod_now is not None and prod_now.digest == digest:
        return "PROD"
    if in_flight and test_now is not None and test_now.digest == digest:
        return "TEST"
    return None


class StageCopy(FrozenModel):
    """The outcome of copying the image into TEST or PROD."""

    repository: str
    digest: str
    version: str
    new_version: bool
    latest_moved: bool
    previous_version: str | None = None
    blobs_present: int = 0
    blobs_mounted: int = 0
    blobs_copied: int = 0
    bytes_moved: int = 0
    mounts_refused: int = 0  # blobs streamed because the registry refused the mount
    mount_refused_reason: str = ""
    seconds: float = 0.0


class TestRun(TestResults):
    """Tests in progress or done: built-in checks, then the repository's test machine."""

    status: Literal["RUNNING", "PASSED", "FAILED"]
    execution_arn: str | None = None
    poll_seconds: int = 10
    started_at: float

    def results(self) -> TestResults:
        return TestResults.model_validate(self.model_dump(include=set(TestResults.model_fields)))


# -- what each task of the state machines sends its function -------------------------


class ResolveTask(FrozenModel):
    execution: str
    input: Any = None
    started_at: datetime | None = None


class ApprovalTask(FrozenModel):
    execution: str
    task_token: str = Field(repr=False)
    stage: Destination
    plan: Plan
    tests: TestRun | None = None


class CopyTask(FrozenModel):
    execution: str
    stage: Destination
    plan: Plan


class TestsTask(FrozenModel):
    __test__: ClassVar[bool] = False

    execution: str
    action: Literal["start", "poll"]
    plan: Plan
    copy_: StageCopy = Field(alias="copy")
    run: TestRun | None = None
    timeout_seconds: int = Field(default=3600, ge=1)


class NotifyTask(FrozenModel):
    execution: str
    workflow: Literal["PROMOTION", "ROLLBACK"]
    outcome: Outcome
    details: dict[str, Any] = Field(default_factory=dict)
    failure: dict[str, Any] | None = None


class RollbackInput(FrozenModel):
    """`{"repository", "to"?, "from"?}`: `from` is where the caller saw PROD's `latest`
    (a version or a digest); the rollback fails with LatestMoved if it is no longer there."""

    repository: str
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, raw: Any) -> Any:
        """Any JSON may start an execution: what is not a rollback request is BadInput."""
        if not isinstance(raw, dict):
            raise BadInput('the input must be a JSON object: {"repository": "ecr-prod/repo-1"}')
        if not raw.get("repository") or not isinstance(raw["repository"], str):
            raise BadInput('missing "repository": start with {"repository": "ecr-prod/repo-1"}')
        return raw


class RollbackTask(FrozenModel):
    execution: str
    input: RollbackInput
