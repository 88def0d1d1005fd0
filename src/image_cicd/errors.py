"""The errors a person can cause or fix: reported as one line by the CLI."""

from __future__ import annotations

from image_cicd.registry.errors import RegistryError
from image_cicd.versions import VersionError

USER_ERRORS: tuple[type[Exception], ...] = (RegistryError, VersionError, ValueError)
