"""Amazon ECR's image scanning behind the core's port (`promotion.checks.ScanFindings`)."""

from __future__ import annotations

from typing import Any

from image_cicd.promotion.errors import ScanInProgress


class EcrScanFindings:
    """Amazon ECR's `DescribeImageScanFindings` (basic or enhanced scanning)."""

    _UNAVAILABLE = (
        "ScanNotFoundException",
        "ImageNotFoundException",
        "RepositoryNotFoundException",
    )

    def __init__(self, ecr_client: Any) -> None:
        self._ecr = ecr_client

    def severity_counts(self, repository: str, digest: str) -> dict[str, int] | None:
        try:
            found = self._ecr.describe_image_scan_findings(
                repositoryName=repository, imageId={"imageDigest": digest}
            )
        except self._ecr.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in self._UNAVAILABLE:
                return None
            raise
        status = found.get("imageScanStatus", {}).get("status", "")
        if status in ("IN_PROGRESS", "PENDING"):
            raise ScanInProgress(f"the scan of {repository}@{digest[:19]} is still running")
        if status not in ("COMPLETE", "ACTIVE"):
            return None
        counts = found.get("imageScanFindings", {}).get("findingSeverityCounts", {})
        return {str(k): int(v) for k, v in counts.items()}
