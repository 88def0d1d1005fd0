"""docs/contracts.md "Ledger table" is what the ledger and the lock write: every item
kind, its keys, its index keys and its attributes, read back from moto's DynamoDB."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from support.ledger_table import create_ledger_table

from image_cicd.approvals.decisions import new_approval_request
from image_cicd.ledger.records import (
    ApprovalRecord,
    ApprovalRequest,
    CheckResult,
    ImageRef,
    Release,
    RollbackPlan,
    TestResults,
)
from image_cicd.ledger.store import Ledger
from image_cicd.promotion.locks import DynamoDBLocker

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
TABLE = "ledger"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
KEYS = {"pk", "sk"}
INDEX_KEYS = {"gsi1pk", "gsi1sk"}


@dataclass(frozen=True)
class ItemKind:
    name: str
    pk: re.Pattern[str]
    sk: re.Pattern[str]
    index: tuple[re.Pattern[str], re.Pattern[str]] | None
    attributes: tuple[str, ...]


def _pattern(code: str) -> re.Pattern[str]:
    """`APPROVAL#<approval id>` -> APPROVAL#.+ (every <...> is some text)."""
    parts = re.split(r"<[^>]+>", code.strip().strip("`"))
    return re.compile(".+".join(re.escape(part) for part in parts))


def documented_kinds() -> list[ItemKind]:
    text = CONTRACTS.read_text(encoding="utf-8")
    section = text.split("## Ledger table", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    kinds = []
    for row in rows[1:]:  # rows[0] is the header
        name, pk, sk, index, attributes = (cell.strip() for cell in row.strip("|").split("|"))
        gsi = None
        if index != "—":
            gsi1pk, gsi1sk = index.split(" / ")
            gsi = (_pattern(gsi1pk), _pattern(gsi1sk))
        names = tuple(re.findall(r"`([^`]+)`", attributes))
        kinds.append(ItemKind(name, _pattern(pk), _pattern(sk), gsi, names))
    return kinds


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb")
        create_ledger_table(client, TABLE)
        yield client


def write_every_kind(client: Any) -> list[dict[str, Any]]:
    """Each item kind at least once, with every optional attribute set; the table's items."""
    ledger = Ledger(TABLE, client)
    tests = TestResults(passed=True, summary="1 check", checks=[CheckResult(name="c", passed=True)])

    def approval(execution: str) -> ApprovalRequest:
        return new_approval_request(
            execution=execution,
            stage="TEST",
            repository="ecr-dev/repo-1",
            target_repository="ecr-test/repo-1",
            digest=OLD,
            task_token="token",
            timeout=timedelta(hours=1),
            now=T0,
            version="v0.2",
            current=ImageRef(digest=OLD, version="v0.1"),
            tests=tests,
        )

    decided = approval("e-1")
    ledger.put_approval_request(decided)
    ledger.decide(decided.approval_id, "APPROVED", "ann", "ok", "10.0.0.1", "curl", now=T0)
    older = approval("e-2")
    ledger.put_approval_request(older)
    ledger.add_waiter(older)
    ledger.supersede(older.approval_id, by_execution="e-3", by_digest=NEW, now=T0)
    ledger.start_promotion("e-1", "repo-1", OLD, T0)
    record = ApprovalRecord(approval_id=decided.approval_id, stage="TEST", decision="APPROVED")
    ledger.update_promotion(
        "e-1", test_version="v0.2", prod_version="v0.1", tests=tests, approval=record
    )
    ledger.finish_promotion("e-1", "FAILED", "ImageNotFound: gone", now=T0)
    ledger.record_release(
        Release(repository="ecr-prod/repo-1", version="v0.1", digest=OLD, at=T0, execution="e-1")
    )
    plan = RollbackPlan(
        repository="ecr-prod/repo-1",
        from_version="v0.2",
        from_digest=NEW,
        to_version="v0.1",
        to_digest=OLD,
    )
    ledger.save_rollback_plan("rollback-1", plan)
    with DynamoDBLocker(TABLE, client).hold("ecr-test/repo-1"):
        items: list[dict[str, Any]] = client.scan(TableName=TABLE)["Items"]
    return items


def test_the_documented_item_kinds_are_what_the_ledger_writes(dynamodb: Any) -> None:
    kinds = documented_kinds()
    assert {k.name for k in kinds} >= {"lock", "approval request", "rollback plan"}
    written: dict[str, set[str]] = {}
    for item in write_every_kind(dynamodb):
        pk, sk = item["pk"]["S"], item["sk"]["S"]
        matching = [k for k in kinds if k.pk.fullmatch(pk) and k.sk.fullmatch(sk)]
        assert len(matching) == 1, f"{pk} / {sk}: documented as {[k.name for k in matching]}"
        (kind,) = matching
        if kind.index is None:
            assert not INDEX_KEYS & set(item), kind.name
        else:
            assert kind.index[0].fullmatch(item["gsi1pk"]["S"]), kind.name
            assert kind.index[1].fullmatch(item["gsi1sk"]["S"]), kind.name
        written.setdefault(kind.name, set()).update(set(item) - KEYS - INDEX_KEYS)
    # every documented kind is written, with exactly the documented attributes
    assert set(written) == {k.name for k in kinds}
    for kind in kinds:
        patterns = [_pattern(name) for name in kind.attributes]
        undocumented = {a for a in written[kind.name] if not any(p.fullmatch(a) for p in patterns)}
        assert not undocumented, f"{kind.name}: {sorted(undocumented)} not in docs/contracts.md"
        unwritten = [
            name
            for name, p in zip(kind.attributes, patterns, strict=True)
            if not any(p.fullmatch(a) for a in written[kind.name])
        ]
        assert not unwritten, f"{kind.name}: {unwritten} documented but never written"
