"""Tests of the TEST image: built-in checks, then the repository's own test machine.

Built-in checks read the image through the registry (the content check streams and
hashes every blob; the others read configs and sizes) and, for the scan gate, ECR's
scan findings. The repository's test state machine is started
and then polled by the promotion state machine (a Wait/Choice loop), which runs on
AWS and on the local engine alike — `states:startExecution.sync:2` does not run
locally.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from image_cicd.ledger.records import CheckResult
from image_cicd.promotion.payloads import Plan, StageCopy, TestRun, TestsTask
from image_cicd.promotion.settings import RepositoryTests
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.copy import Image, read_blobs, read_image
from image_cicd.registry.media import Descriptor, Manifest

if TYPE_CHECKING:
    from image_cicd.promotion.steps import Services

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")
# The poll interval grows by this factor up to this bound, so that the poll loop of a
# test machine that runs until TestTimeoutSeconds (6 hours at most) stays far below
# Step Functions' 25,000 history events (tests/infra/test_scale.py computes the worst case).
POLL_BACKOFF_RATE = 1.5
MAX_POLL_SECONDS = 300
_ROOT_USERS = {"", "root", "0", "0:0", "root:root"}
# The content check streams this many blobs at once, one 1 MiB chunk each in memory.
CONTENT_WORKERS = 4
_FAILURES_SHOWN = 3


class ScanFindings(Protocol):
    def severity_counts(self, repository: str, digest: str) -> dict[str, int] | None:
        """Findings per severity; None when no scan is available; ScanInProgress."""


class TestMachines(Protocol):
    """Start and look at a repository's test state machine executions."""

    def start(self, state_machine_arn: str, name: str, payload: dict[str, Any]) -> str: ...

    def status(self, execution_arn: str) -> tuple[str, str]:
        """(RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED, error or output text)."""
        ...

    def stop(self, execution_arn: str, cause: str) -> None: ...


@dataclass(frozen=True)
class CheckPorts:
    """What the Run tests step looks at besides the registry (built by `aws.wiring`)."""

    scans: ScanFindings
    machines: TestMachines


def run_tests(services: Services, ports: CheckPorts, task: TestsTask) -> TestRun:
    """The Run tests step: poll the running test machine, or start (built-in checks, then
    the repository's machine). A run that has ended is recorded on the promotion."""
    if task.action == "poll" and task.run is not None:
        run = poll_tests(task.run, ports.machines, timeout_seconds=task.timeout_seconds)
    else:
        copy = task.copy_
        run = start_tests(
            task.plan,
            copy,
            services.settings.tests_for(task.plan.name),
            services.registry,
            ports.scans,
            ports.machines,
            image_uri=f"{services.registry.host}/{copy.repository}@{copy.digest}",
        )
    if run.status != "RUNNING":
        services.ledger.update_promotion(task.plan.execution, tests=run.results())
    return run


def builtin_checks(
    registry: RegistryClient,
    repository: str,
    digest: str,
    config: RepositoryTests,
    scans: ScanFindings,
) -> list[CheckResult]:
    """Run every configured check against `repository@digest`; never raises on a
    failed check (it is reported), only on a registry or scan error."""
    image = read_image(registry, repository, digest)
    content = _content_check(registry, repository, image)
    if not content.passed:  # the other checks would judge bytes that are not the image
        return [content]
    results = [content]
    # The runnable images: an index's children except `docker buildx` attestation
    # manifests (platform unknown/unknown), each with its config. Every check below
    # judges each of them on its own and names the platforms it fails on.
    runnable: list[_Platform] = []
    pairs: list[tuple[Descriptor | None, Manifest]] = list(
        zip(image.root.children, image.children, strict=True)
    ) or [(None, image.root)]
    for descriptor, manifest in pairs:
        if descriptor is not None and (descriptor.platform or "").startswith("unknown"):
            continue
        doc: dict[str, Any] = {}
        if manifest.config is not None:
            doc = json.loads(registry.get_blob(repository, manifest.config.digest))
        name = (descriptor.platform if descriptor else None) or (
            f"{doc.get('os', '?')}/{doc.get('architecture', '?')}"
        )
        size = len(manifest.data) + sum(b.size for b in manifest.blobs)
        runnable.append(_Platform(name, size, doc.get("config") or {}))
    if config.platforms:
        results.append(_platforms_check(config.platforms, [p.name for p in runnable]))
    if config.max_size_mb is not None:
        results.append(_size_check(config.max_size_mb, runnable))
    for label in config.labels:
        results.append(_label_check(label, runnable))
    if config.non_root:
        results.append(_non_root_check(runnable))
    if config.scan is not None:
        results.append(_scan_check(scans, repository, digest, config))
    return results


@dataclass(frozen=True)
class _Platform:
    """One runnable image: its platform as the index (or its config) names it, the bytes
    a pull of it reads (manifest, config, layers) and its config's `config` section."""

    name: str
    size: int
    config: dict[str, Any]


def normalise_platform(platform: str) -> str:
    """`os/architecture[/variant]` as containerd's `platforms.Normalize` writes it, so
    that `linux/arm64` matches `linux/arm64/v8`, `linux/arm` `linux/arm/v7` and
    `linux/amd64` `linux/amd64/v1` (containerd/platforms database.go)."""
    os_name, _, rest = platform.lower().partition("/")
    arch, _, variant = rest.partition("/")
    os_name = "darwin" if os_name == "macos" else os_name
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch, variant = "amd64", "" if variant == "v1" else variant
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        variant = {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9", "v9.0": "v9"}.get(
            variant, variant
        )
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm" and variant in ("", "7", "5", "6", "8"):
        variant = f"v{variant or 7}"
    return "/".join(part for part in (os_name, arch, variant) if part)


def _platforms_check(required: list[str], platforms: list[str]) -> CheckResult:
    has = {normalise_platform(p) for p in platforms}
    missing = sorted(p for p in required if normalise_platform(p) not in has)
    return CheckResult(
        name="platforms",
        passed=not missing,
        detail=f"has {', '.join(platforms)}"
        + (f"; missing {', '.join(missing)}" if missing else ""),
    )


def _size_check(limit_mb: float, platforms: list[_Platform]) -> CheckResult:
    over = [p.name for p in platforms if p.size / 1e6 > limit_mb]
    sizes = ", ".join(f"{p.name} {p.size / 1e6:.1f} MB" for p in platforms)
    return CheckResult(
        name="size",
        passed=not over,
        detail=f"{sizes} (limit {limit_mb:g} MB per platform)"
        + (f"; over the limit: {', '.join(over)}" if over else ""),
    )


def _label_check(label: str, platforms: list[_Platform]) -> CheckResult:
    """A label passes only with a value on every platform: an empty one is missing."""
    labels = [(p.name, p.config.get("Labels") or {}) for p in platforms]
    missing = [name for name, found in labels if label not in found]
    empty = [name for name, found in labels if label in found and not found[label]]
    problems = [
        f"{what} on {', '.join(names)}"
        for what, names in (("missing", missing), ("empty", empty))
        if names
    ]
    return CheckResult(
        name=f"label {label}",
        passed=not problems,
        detail="; ".join(problems) or "present",
    )


def _non_root_check(platforms: list[_Platform]) -> CheckResult:
    by_user: dict[str, list[str]] = {}
    for p in platforms:
        by_user.setdefault(str(p.config.get("User") or ""), []).append(p.name)
    root = {user: names for user, names in by_user.items() if user in _ROOT_USERS}
    shown = [
        f"{user or '(unset)'} on {', '.join(names)}" for user, names in (root or by_user).items()
    ]
    return CheckResult(
        name="non-root user",
        passed=not root,
        detail=f"runs as {'; as '.join(shown)}" if root else f"user {'; '.join(shown)}",
    )


def _content_check(registry: RegistryClient, repository: str, image: Image) -> CheckResult:
    """Every manifest (read_image checks each digest) and every blob, streamed and hashed."""
    read = read_blobs(registry, repository, image, workers=CONTENT_WORKERS)
    if read.failures:
        shown = "; ".join(read.failures[:_FAILURES_SHOWN])
        more = len(read.failures) - _FAILURES_SHOWN
        return CheckResult(
            name="content",
            passed=False,
            detail=f"{len(read.failures)} of {read.blobs} blob(s) do not match their digest "
            f"in {repository}: {shown}" + (f"; and {more} more" if more > 0 else ""),
        )
    return CheckResult(
        name="content",
        passed=True,
        detail=f"{len(image.manifests)} manifest(s) and {read.blobs} blob(s) "
        f"({read.bytes:,} bytes) read from the registry and hashed: "
        "every one matches its digest",
    )


def _scan_check(
    scans: ScanFindings, repository: str, digest: str, config: RepositoryTests
) -> CheckResult:
    assert config.scan is not None
    counts = scans.severity_counts(repository, digest)
    if counts is None:
        allowed = config.scan.unavailable == "pass"
        return CheckResult(
            name="scan findings",
            passed=allowed,
            detail="no scan available for this image; policy: " + ("pass" if allowed else "fail"),
        )
    over = [
        f"{severity} {counts.get(severity, 0)} > {limit}"
        for severity, limit in sorted(config.scan.max.items())
        if counts.get(severity, 0) > limit
    ]
    found = ", ".join(f"{s} {counts[s]}" for s in SEVERITIES if counts.get(s)) or "none"
    return CheckResult(
        name="scan findings",
        passed=not over,
        detail=f"findings: {found}" + (f"; over the limit: {'; '.join(over)}" if over else ""),
    )


def start_tests(
    plan: Plan,
    copy: StageCopy,
    config: RepositoryTests,
    registry: RegistryClient,
    scans: ScanFindings,
    machines: TestMachines,
    *,
    image_uri: str,
    now: float | None = None,
) -> TestRun:
    """Built-in checks; if they pass and the repository has a test machine, start it."""
    started = time.time() if now is None else now
    checks = builtin_checks(registry, copy.repository, copy.digest, config, scans)
    failed = [c for c in checks if not c.passed]
    if failed or not config.state_machine_arn:
        return _finished(checks, started, now)
    execution_arn = machines.start(
        config.state_machine_arn,
        f"{plan.execution}-tests"[:80],
        {
            "repository": copy.repository,
            "digest": copy.digest,
            "version": copy.version,
            "image": image_uri,
            "execution": plan.execution,
        },
    )
    return TestRun(
        passed=False,
        status="RUNNING",
        summary="built-in checks passed; test state machine running",
        checks=checks,
        execution_arn=execution_arn,
        poll_seconds=config.poll_seconds,
        started_at=started,
    )


def poll_tests(
    run: TestRun, machines: TestMachines, *, timeout_seconds: float, now: float | None = None
) -> TestRun:
    """Look at the running test machine once; RUNNING until it ends or times out.

    While it runs, the next wait (`poll_seconds`, the Wait state's SecondsPath) grows.
    """
    assert run.execution_arn is not None
    now = time.time() if now is None else now
    status, detail = machines.status(run.execution_arn)
    if status == "RUNNING" and now - run.started_at < timeout_seconds:
        longer = min(MAX_POLL_SECONDS, math.ceil(run.poll_seconds * POLL_BACKOFF_RATE))
        return run.model_copy(update={"poll_seconds": max(run.poll_seconds, longer)})
    if status == "RUNNING":
        detail = f"still running after {timeout_seconds:g} s; stopped"
        machines.stop(run.execution_arn, detail)
        status = "TIMED_OUT"
    check = CheckResult(
        name="test state machine",
        passed=status == "SUCCEEDED",
        detail=f"{status.lower()}: {detail[:500]}" if status != "SUCCEEDED" else "succeeded",
    )
    return _finished([*run.checks, check], run.started_at, now)


def _finished(checks: list[CheckResult], started: float, now: float | None) -> TestRun:
    failed = [c for c in checks if not c.passed]
    summary = (
        f"{len(checks)} check(s) passed"
        if not failed
        else "failed: " + "; ".join(f"{c.name} ({c.detail})" for c in failed)
    )
    ended = time.time() if now is None else now
    return TestRun(
        passed=not failed,
        status="FAILED" if failed else "PASSED",
        summary=summary,
        checks=checks,
        duration_seconds=round(ended - started, 3),
        started_at=started,
    )
