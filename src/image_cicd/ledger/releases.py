"""The releases of PROD and the rollback plans: the audit trail of what PROD ran."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from botocore.exceptions import ClientError

from image_cicd.ledger.records import Release, RollbackPlan, iso
from image_cicd.ledger.table import (
    LedgerTable,
    attribute_values,
    conditional_failed,
    decode_item,
    encode_item,
)


class Releases(LedgerTable):
    """Items ``RELEASE#<prod repository>`` / ``<at>#<version>`` and
    ``ROLLBACK#<execution>`` / ``PLAN``."""

    def record_release(self, release: Release) -> None:
        item = {
            "pk": {"S": f"RELEASE#{release.repository}"},
            "sk": {"S": f"{iso(release.at)}#{release.version}"},
            **encode_item(release.model_dump(mode="json")),
        }
        self.client.put_item(TableName=self.table_name, Item=item)

    def save_rollback_plan(self, execution: str, plan: RollbackPlan) -> RollbackPlan:
        """Keep a rollback execution's plan; the first one saved wins (a retry gets it)."""
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    "pk": {"S": f"ROLLBACK#{execution}"},
                    "sk": {"S": "PLAN"},
                    **encode_item(asdict(plan)),
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if not conditional_failed(error):
                raise
            stored = self.rollback_plan(execution)
            assert stored is not None
            return stored
        return plan

    def rollback_plan(self, execution: str) -> RollbackPlan | None:
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": f"ROLLBACK#{execution}"}, "sk": {"S": "PLAN"}},
            ConsistentRead=True,
        )
        if "Item" not in response:
            return None
        data = decode_item(response["Item"])
        # from_version is left out when None (`latest` was at an untagged digest)
        fields: dict[str, Any] = {k: data.get(k) for k in RollbackPlan.__dataclass_fields__}
        return RollbackPlan(**fields)

    def releases(self, prod_repository: str, limit: int | None = None) -> list[Release]:
        """Releases of a PROD repository, newest first."""
        paginator = self.client.get_paginator("query")
        releases: list[Release] = []
        for page in paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues=attribute_values(pk=f"RELEASE#{prod_repository}"),
            ScanIndexForward=False,
        ):
            for item in page.get("Items", []):
                releases.append(Release.model_validate(decode_item(item)))
                if limit is not None and len(releases) >= limit:
                    return releases
        return releases
