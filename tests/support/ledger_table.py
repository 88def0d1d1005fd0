"""The ledger table as template.yaml declares it (LedgerTable), created the way the
local deployer creates it."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from image_cicd.local.deployer import create_table
from image_cicd.local.template import expand, load_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@cache
def ledger_properties() -> dict[str, Any]:
    """The Properties of template.yaml's LedgerTable (after Fn::ForEach expansion)."""
    properties: dict[str, Any] = expand(load_template(TEMPLATE))["Resources"]["LedgerTable"][
        "Properties"
    ]
    return properties


def create_ledger_table(client: Any, name: str) -> str:
    """Create the ledger table with boto3 ``client`` (DynamoDB); returns its name."""
    create_table(client, name, ledger_properties())
    return name
