"""Named errors of the workflow.

The class name is the error name Step Functions sees (a Lambda's `errorType`), so
the state machines Retry and Catch on exactly these names.
"""

from __future__ import annotations

import json

from image_cicd.promotion.versions import VersionError
from image_cicd.registry.errors import RegistryError


class WorkflowError(Exception):
    """A promotion step that cannot go on; the message says why."""


class ConfigurationError(WorkflowError):
    pass


class RepositoryNotConfigured(WorkflowError):
    pass


class ImageNotFound(WorkflowError):
    pass


class BadInput(WorkflowError):
    pass


class PromotionSuperseded(WorkflowError):
    """A newer image of the repository already waits for the same approval."""


class ScanInProgress(WorkflowError):
    """The ECR scan has not finished; the state machine retries."""


class TestsFailed(WorkflowError):
    """The tests of the TEST image did not pass: the name the promotion fails with (its
    `Tests failed` state sets it; no step raises it)."""


USER_ERRORS: tuple[type[Exception], ...] = (RegistryError, VersionError, WorkflowError, ValueError)


def cause_text(cause: str | None) -> str:
    """The message in a failure cause: Lambda errors arrive as JSON with a stack trace."""
    if not cause:
        return ""
    try:
        data = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(data, dict) and "errorMessage" in data:
        return str(data["errorMessage"])
    return cause
