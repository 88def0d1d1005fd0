"""PromotionRequest.parse (where a promotion starts) and TestRun.results()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from image_cicd.ledger.records import CheckResult, TestResults
from image_cicd.promotion.errors import BadInput
from image_cicd.promotion.payloads import PromotionRequest, TestRun

DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE_DETAIL = Path("/work/shared/reference/codepipeline-ecr-source-imageDetail.json")
REFERENCE_DIGEST = "sha256:288606229140e7a185f01099e99cfc66f13f7c0701528264b8f93b0ef0f8c82c"


def image_detail() -> dict[str, Any]:
    """CodePipeline's ECR source output (the reference file, or its copy below)."""
    if IMAGE_DETAIL.exists():
        loaded: dict[str, Any] = json.loads(IMAGE_DETAIL.read_text())
        return loaded
    return {
        "ImageSizeInBytes": "104894215",
        "ImageDigest": REFERENCE_DIGEST,
        "Version": "1.0",
        "ImagePushedAt": "Thu Nov 26 07:03:17 UTC 2026",
        "RegistryId": "123456789012",
        "RepositoryName": "ecr-dev/repo-1",
        "ImageURI": (
            f"123456789012.dkr.ecr.us-east-1.amazonaws.com/ecr-dev/repo-1@{REFERENCE_DIGEST}"
        ),
        "ImageTags": ["latest"],
    }


# ------------------------------------------------------------ good inputs


def test_given_repository_and_digest_when_parsed_then_both_are_kept() -> None:
    request = PromotionRequest.parse({"repository": "ecr-dev/repo-1", "digest": DIGEST})

    assert request == PromotionRequest(repository="ecr-dev/repo-1", digest=DIGEST)


def test_given_codepipeline_image_detail_when_parsed_then_repository_and_digest_are_read() -> None:
    request = PromotionRequest.parse(image_detail())

    assert request.repository == "ecr-dev/repo-1"
    assert request.digest == REFERENCE_DIGEST


def test_given_extra_fields_when_parsed_then_they_are_ignored() -> None:
    request = PromotionRequest.parse(
        {"repository": "ecr-dev/repo-1", "digest": DIGEST, "tag": "latest", "note": 1}
    )

    assert request.model_dump() == {"repository": "ecr-dev/repo-1", "digest": DIGEST}


def test_snake_case_keys_win_over_image_detail_keys() -> None:
    other = "sha256:" + "f" * 64
    request = PromotionRequest.parse(
        {
            "repository": "ecr-dev/repo-1",
            "digest": DIGEST,
            "RepositoryName": "ecr-dev/other",
            "ImageDigest": other,
        }
    )

    assert (request.repository, request.digest) == ("ecr-dev/repo-1", DIGEST)


# ------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("raw", [None, "ecr-dev/repo-1", ["ecr-dev/repo-1", DIGEST], 42])
def test_given_a_non_object_when_parsed_then_bad_input(raw: Any) -> None:
    with pytest.raises(BadInput, match="must be a JSON object"):
        PromotionRequest.parse(raw)


@pytest.mark.parametrize(
    "raw",
    [
        {"digest": DIGEST},
        {"repository": "", "digest": DIGEST},
        {"repository": None, "digest": DIGEST},
        {"repository": ["ecr-dev/repo-1"], "digest": DIGEST},
        {"ImageDigest": DIGEST, "ImageTags": ["latest"]},
        {},
    ],
)
def test_given_no_repository_when_parsed_then_bad_input_shows_the_expected_shape(
    raw: dict[str, Any],
) -> None:
    with pytest.raises(BadInput) as caught:
        PromotionRequest.parse(raw)

    message = str(caught.value)
    assert 'missing "repository"' in message
    assert '"digest": "sha256:..."' in message
    assert "imageDetail.json" in message


@pytest.mark.parametrize(
    "raw",
    [
        {"repository": "ecr-dev/repo-1"},
        {"repository": "ecr-dev/repo-1", "digest": ""},
        {"RepositoryName": "ecr-dev/repo-1", "ImageTags": ["latest"]},
    ],
)
def test_given_no_digest_when_parsed_then_bad_input_says_promotions_are_pinned(
    raw: dict[str, Any],
) -> None:
    with pytest.raises(BadInput) as caught:
        PromotionRequest.parse(raw)

    assert "missing digest for ecr-dev/repo-1" in str(caught.value)
    assert "pinned by digest" in str(caught.value)


@pytest.mark.parametrize(
    "digest",
    [
        "latest",
        "v0.1",
        "sha256:1234",
        "sha256:" + "A" * 64,  # upper-case hex is not canonical
        "sha512:" + "a" * 128,
        "sha256:" + "a" * 64 + "\n",
        "ecr-dev/repo-1@sha256:" + "a" * 64,
        12345,
        ["sha256:" + "a" * 64],
    ],
)
def test_given_something_else_than_a_digest_when_parsed_then_bad_input(digest: Any) -> None:
    with pytest.raises(BadInput) as caught:
        PromotionRequest.parse({"repository": "ecr-dev/repo-1", "digest": digest})

    assert f"{digest!r} is not a sha256 digest" in str(caught.value)


def test_bad_input_is_a_named_workflow_error() -> None:
    # Step Functions sees the class name as the error name.
    with pytest.raises(BadInput) as caught:
        PromotionRequest.parse({})

    assert type(caught.value).__name__ == "BadInput"


# ------------------------------------------------------------------ TestRun


def test_given_a_finished_run_when_results_then_only_the_test_results_remain() -> None:
    checks = [
        CheckResult(name="content", passed=True, detail="1 manifest(s)"),
        CheckResult(name="test state machine", passed=False, detail="failed: boom"),
    ]
    run = TestRun(
        passed=False,
        summary="failed: test state machine (failed: boom)",
        checks=checks,
        duration_seconds=12.5,
        status="FAILED",
        execution_arn="arn:aws:states:us-east-1:123456789012:execution:t:e",
        poll_seconds=7,
        started_at=1_700_000_000.0,
    )

    results = run.results()

    assert type(results) is TestResults
    assert results == TestResults(
        passed=False,
        summary="failed: test state machine (failed: boom)",
        checks=checks,
        duration_seconds=12.5,
    )
    assert set(results.model_dump()) == {"passed", "summary", "checks", "duration_seconds"}


def test_a_test_run_round_trips_through_json_as_the_state_machine_carries_it() -> None:
    run = TestRun(
        passed=False,
        status="RUNNING",
        checks=[CheckResult(name="content", passed=True)],
        execution_arn="arn:aws:states:us-east-1:123456789012:execution:t:e",
        started_at=1_700_000_000.25,
    )

    again = TestRun.model_validate(json.loads(json.dumps(run.model_dump(mode="json"))))

    assert again == run
