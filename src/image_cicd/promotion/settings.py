"""Settings of a deployed stack, read from the function environment in one place.

The names are those `template.yaml` sets (docs/contracts.md). Everything else in the
core takes a `Settings` (or plain values) and reads no environment variable.

The repository list and the tests per repository can exceed Lambda's 4 KB environment,
so the stack keeps them in SSM parameters and sets only their names
(`REPOSITORIES_PARAMETER`, `TEST_CONFIG_PARAMETER`), on the functions that read them;
`load` reads such a parameter. Without a parameter name, `REPOSITORIES` and
`TEST_CONFIG` hold the value itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from image_cicd.promotion.errors import ConfigurationError, RepositoryNotConfigured
from image_cicd.stages import STAGES, Stage


class ScanPolicy(BaseModel):
    """The ECR scan findings gate: the most findings allowed per severity."""

    model_config = ConfigDict(extra="forbid")

    max: dict[str, int] = Field(default_factory=lambda: {"CRITICAL": 0})
    unavailable: Literal["pass", "fail"] = "pass"


class RepositoryTests(BaseModel):
    """Built-in checks of one repository, and its own test state machine (optional)."""

    model_config = ConfigDict(extra="forbid")

    platforms: list[str] = Field(default_factory=list)
    max_size_mb: float | None = None
    labels: list[str] = Field(default_factory=list)
    non_root: bool = False
    scan: ScanPolicy | None = None
    state_machine_arn: str | None = None
    poll_seconds: int = Field(default=10, ge=1, le=300)


@dataclass(frozen=True)
class Settings:
    repositories: tuple[str, ...]
    dev_prefix: str = "ecr-dev"
    test_prefix: str = "ecr-test"
    prod_prefix: str = "ecr-prod"
    registry_url: str = ""
    version_format: str = "v{major}.{minor}"
    ledger_table: str = ""
    approvals_topic_arn: str = ""
    notifications_topic_arn: str = ""
    approval_base_url: str = ""
    approval_timeout_seconds: int = 86400
    supersede_waiting_promotions: bool = True
    tests: dict[str, RepositoryTests] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, load: Callable[[str], str] | None = None
    ) -> Settings:
        env = os.environ if env is None else env
        listed = _stored(env, "REPOSITORIES", load)
        repositories = tuple(r.strip() for r in listed.split(",") if r.strip())
        try:
            raw_tests: Any = json.loads(_stored(env, "TEST_CONFIG", load) or "{}")
        except ValueError as exc:
            raise ConfigurationError(f"TEST_CONFIG is not valid JSON: {exc}") from exc
        if not isinstance(raw_tests, dict):
            raise ConfigurationError(
                "TEST_CONFIG must be a JSON object of repository name -> checks"
            )
        tests: dict[str, RepositoryTests] = {}
        for name, value in raw_tests.items():
            try:
                tests[name] = RepositoryTests.model_validate(value)
            except ValidationError as exc:
                raise ConfigurationError(f"TEST_CONFIG[{name!r}]: {exc}") from exc
        try:
            timeout = int(env.get("APPROVAL_TIMEOUT_SECONDS") or 86400)
        except ValueError as exc:
            raise ConfigurationError(
                f"APPROVAL_TIMEOUT_SECONDS must be a whole number of seconds: {exc}"
            ) from exc
        supersede = (env.get("SUPERSEDE_WAITING_PROMOTIONS") or "true").strip().lower()
        if supersede not in ("true", "false"):
            raise ConfigurationError(
                f"SUPERSEDE_WAITING_PROMOTIONS must be true or false, not {supersede!r}"
            )
        unknown = sorted(set(tests) - set(repositories))
        if unknown:
            raise ConfigurationError(f"TEST_CONFIG names unknown repositories: {unknown}")
        return cls(
            repositories=repositories,
            dev_prefix=env.get("DEV_PREFIX", "ecr-dev"),
            test_prefix=env.get("TEST_PREFIX", "ecr-test"),
            prod_prefix=env.get("PROD_PREFIX", "ecr-prod"),
            registry_url=env.get("REGISTRY_URL", ""),
            version_format=env.get("VERSION_FORMAT") or "v{major}.{minor}",
            ledger_table=env.get("LEDGER_TABLE", ""),
            approvals_topic_arn=env.get("APPROVALS_TOPIC_ARN", ""),
            notifications_topic_arn=env.get("NOTIFICATIONS_TOPIC_ARN", ""),
            approval_base_url=env.get("APPROVAL_BASE_URL", ""),
            approval_timeout_seconds=timeout,
            supersede_waiting_promotions=supersede == "true",
            tests=tests,
        )

    def prefix(self, stage: Stage) -> str:
        return {"DEV": self.dev_prefix, "TEST": self.test_prefix, "PROD": self.prod_prefix}[stage]

    def stage_repository(self, name: str, stage: Stage) -> str:
        return f"{self.prefix(stage)}/{name}"

    def split(self, repository: str) -> tuple[Stage, str]:
        """`ecr-dev/repo-1` -> ("DEV", "repo-1"); refuses repositories not configured."""
        for stage in STAGES:
            prefix = self.prefix(stage) + "/"
            if repository.startswith(prefix) and repository[len(prefix) :] in self.repositories:
                return stage, repository[len(prefix) :]
        configured = ", ".join(self.repositories) or "none"
        raise RepositoryNotConfigured(
            f"{repository!r} is not a configured stage repository (prefixes "
            f"{self.dev_prefix}/, {self.test_prefix}/, {self.prod_prefix}/; repositories: "
            f"{configured}). Add it to the Repositories parameter and deploy."
        )

    def tests_for(self, name: str) -> RepositoryTests:
        return self.tests.get(name, RepositoryTests())


def _stored(env: Mapping[str, str], name: str, load: Callable[[str], str] | None) -> str:
    """`name`'s value: from the SSM parameter `<name>_PARAMETER` names, else `name` itself."""
    parameter = env.get(f"{name}_PARAMETER")
    if not parameter:
        return env.get(name, "")
    if load is None:
        raise ConfigurationError(f"{name}_PARAMETER is set but nothing can read parameters")
    return load(parameter)
