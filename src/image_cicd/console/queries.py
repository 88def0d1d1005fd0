"""What the console shows, read from the stack: executions of both state machines
(with the ledger's promotions and pending approvals), one execution's view, the
stages of a repository. Reads only; no markup (templates under web/templates/console/).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from image_cicd.aws.stack import DeployedStack
from image_cicd.aws.stepfunctions import execution_arn_for
from image_cicd.console.history import ExecutionView, view
from image_cicd.ledger.records import ApprovalRequest, Promotion
from image_cicd.ledger.store import LedgerError
from image_cicd.promotion.versions import StageState, VersionError, plan_rollback_of, read_stage
from image_cicd.stages import STAGES

__all__ = ["MAX_ROWS", "Execution", "Queries", "Row", "StageRow"]

log = logging.getLogger(__name__)

MAX_ROWS = 200
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass
class Row:
    """One execution in the executions list."""

    name: str
    workflow: str  # promotion | rollback
    status: str
    repository: str
    digest: str | None
    versions: str
    started: datetime | None
    stopped: datetime | None
    waiting: str | None = None  # the stage whose approval it waits for
    outcome: str | None = None  # the ledger's SUPERSEDED or ALREADY_PROMOTED


@dataclass
class Execution:
    """One execution: its view, its machine's definition and what waits for it."""

    view: ExecutionView
    definition: dict[str, Any]
    workflow: str  # promotion | rollback
    approval: ApprovalRequest | None
    promotion: Promotion | None = None

    @property
    def fingerprint(self) -> str:
        """Changes whenever what the execution's page shows changes."""
        ex = self.view
        data: list[Any] = [ex.status, ex.path]
        data.append([(s.name, s.status, s.retries) for s in ex.states.values()])
        data.append(self.approval.approval_id if self.approval else None)
        return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()[:20]


@dataclass
class StageRow:
    """One stage of a repository: its state (None: the registry could not be read)
    and its tags that are neither versions nor `latest`."""

    stage: str
    repository: str
    state: StageState | None
    other_tags: dict[str, str] = field(default_factory=dict)


class Queries:
    """Reads of `stack` (the stack) for the console's pages."""

    def __init__(self, stack: DeployedStack) -> None:
        self.stack = stack
        self.scheme = stack.scheme
        self._definitions: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------ executions

    def _sfn(self) -> Any:
        return self.stack.client("stepfunctions")

    def _list(self, machine: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"stateMachineArn": machine, "maxResults": 1000}
        while True:
            page = self._sfn().list_executions(**kwargs)
            found.extend(page.get("executions", []))
            if not page.get("nextToken"):
                return found
            kwargs["nextToken"] = page["nextToken"]

    def _promotions(self) -> dict[str, Promotion]:
        ledger = self.stack.ledger
        found: dict[str, Promotion] = {}
        for name in self.stack.repositories:
            try:
                for promotion in ledger.promotions_for(name, limit=MAX_ROWS):
                    found[promotion.execution] = promotion
            except LedgerError:
                continue
        return found

    def pending(self) -> dict[str, ApprovalRequest]:
        """Pending approval requests by execution name."""
        return {a.execution: a for a in self.stack.ledger.list_approvals("PENDING")}

    def approvals(self) -> list[ApprovalRequest]:
        return self.stack.ledger.list_approvals()

    def _input(self, arn: str) -> dict[str, Any]:
        try:
            desc = self._sfn().describe_execution(executionArn=arn)
            data = json.loads(desc.get("input") or "{}")
        except Exception:
            return {}
        return data if isinstance(data, dict) else {}

    def rows(self) -> list[Row]:
        """Executions of both state machines, newest first."""
        promotions = self._promotions()
        pending = self.pending()
        rows: list[Row] = []
        for item in self._list(self.stack.promotion_arn):
            promotion = promotions.get(item["name"])
            if promotion is not None:
                repository, digest = promotion.repository, promotion.digest
                versions = " · ".join(
                    f"{stage} {version}"
                    for stage, version in (
                        ("TEST", promotion.test_version),
                        ("PROD", promotion.prod_version),
                    )
                    if version
                )
            else:
                data = self._input(item["executionArn"])
                repository = str(data.get("repository", "")).rsplit("/", 1)[-1]
                digest, versions = str(data.get("digest") or ""), ""
            approval = pending.get(item["name"])
            rows.append(
                Row(
                    item["name"],
                    "promotion",
                    item["status"],
                    repository,
                    digest,
                    versions,
                    item.get("startDate"),
                    item.get("stopDate"),
                    approval.stage if approval and item["status"] == "RUNNING" else None,
                    promotion.outcome
                    if promotion is not None
                    and promotion.outcome in ("SUPERSEDED", "ALREADY_PROMOTED")
                    else None,
                )
            )
        for item in self._list(self.stack.rollback_arn):
            data = self._input(item["executionArn"])
            desc = self._sfn().describe_execution(executionArn=item["executionArn"])
            output = json.loads(desc.get("output") or "{}").get("rollback") or {}
            versions = (
                f"{output.get('from')} → {output.get('to')}"
                if output.get("from")
                else (f"to {data['to']}" if data.get("to") else "to the previous version")
            )
            rows.append(
                Row(
                    item["name"],
                    "rollback",
                    item["status"],
                    str(data.get("repository", "")).rsplit("/", 1)[-1],
                    output.get("digest"),
                    versions,
                    item.get("startDate"),
                    item.get("stopDate"),
                )
            )
        epoch = datetime.min.replace(tzinfo=UTC)
        rows.sort(key=lambda r: r.started or epoch, reverse=True)
        return rows

    # -------------------------------------------------------------- execution

    def _definition(self, machine: str) -> dict[str, Any]:
        if machine not in self._definitions:
            desc = self._sfn().describe_state_machine(stateMachineArn=machine)
            self._definitions[machine] = json.loads(desc["definition"])
        return self._definitions[machine]

    def _find(self, name: str) -> tuple[str, str] | None:
        """(execution ARN, state machine ARN) of an execution name, if it exists."""
        if not _NAME.match(name):
            return None
        for machine in (self.stack.promotion_arn, self.stack.rollback_arn):
            arn = execution_arn_for(machine, name)
            try:
                self._sfn().describe_execution(executionArn=arn)
            except Exception:  # noqa: S112 - not this machine's
                continue
            return arn, machine
        return None

    def execution(self, name: str, *, with_promotion: bool = False) -> Execution | None:
        """The execution named `name` (None if there is none); `with_promotion` also
        reads the ledger's record of a promotion."""
        found = self._find(name)
        if found is None:
            return None
        arn, machine = found
        definition = self._definition(machine)
        ex = view(self._sfn(), arn, definition)
        approval = None
        if ex.status == "RUNNING" and ex.waiting:
            approval = self.pending().get(ex.name)
        workflow = "rollback" if machine == self.stack.rollback_arn else "promotion"
        promotion = None
        if with_promotion and workflow == "promotion":
            try:
                promotion = self.stack.ledger.get_promotion(ex.name)
            except LedgerError:
                promotion = None
        return Execution(ex, definition, workflow, approval, promotion)

    # ----------------------------------------------------------- repositories

    def stage_state(self, repository: str) -> StageState | None:
        """The stage repository's versions and `latest` (None: registry unreadable)."""
        try:
            return read_stage(self.stack.registry, repository, self.scheme)
        except Exception:
            log.warning("cannot read %s", repository, exc_info=True)
            return None

    def _other_tags(self, repository: str, state: StageState, limit: int = 8) -> dict[str, str]:
        """Tags that are neither versions nor `latest` (e.g. DEV's pushed tags)."""
        try:
            tags = self.stack.registry.list_tags(repository)
        except Exception:
            return {}
        others = [
            t
            for t in tags
            if t != "latest" and t not in state.versions and not self.scheme.parse(t)
        ][:limit]
        found: dict[str, str] = {}
        for tag in others:
            try:
                head = self.stack.registry.head_manifest(repository, tag)
            except Exception:  # noqa: S112 - a tag deleted meanwhile is left out
                continue
            if head is not None:
                found[tag] = head.digest
        return found

    def stages(self, name: str) -> list[StageRow]:
        """Each stage of the repository `name`, DEV first."""
        rows = []
        for stage in STAGES:
            repository = self.stack.stage_repository(name, stage)
            state = self.stage_state(repository)
            others = self._other_tags(repository, state) if state is not None else {}
            rows.append(StageRow(stage, repository, state, others))
        return rows

    @staticmethod
    def rollback_choices(prod: StageState | None) -> tuple[str | None, list[str]]:
        """(the version a rollback without `to` goes to, if any; the versions `latest`
        can be moved to, newest first). Only named ones if `latest` is at an untagged
        digest (moved outside the tool: there is no "previous" version)."""
        if prod is None or prod.latest is None:
            return None, []
        others = [v for v in reversed(prod.ordered()) if prod.versions[v] != prod.latest]
        try:
            previous: str | None = plan_rollback_of(prod).to_version
        except VersionError:
            previous = None
        return previous, others
