"""Settings.from_env and the stage repository names (no AWS, no network)."""

from __future__ import annotations

import json

import pytest

from image_cicd.promotion.errors import ConfigurationError, RepositoryNotConfigured
from image_cicd.promotion.settings import RepositoryTests, ScanPolicy, Settings


def env(**values: str) -> dict[str, str]:
    """The environment template.yaml sets, with `values` replacing the defaults."""
    base = {
        "REPOSITORIES": "repo-1,repo-2",
        "DEV_PREFIX": "ecr-dev",
        "TEST_PREFIX": "ecr-test",
        "PROD_PREFIX": "ecr-prod",
        "REGISTRY_URL": "",
        "VERSION_FORMAT": "v{major}.{minor}",
        "LEDGER_TABLE": "ledger",
        "APPROVALS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:approvals",
        "NOTIFICATIONS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:notifications",
        "APPROVAL_BASE_URL": "https://abc.execute-api.us-east-1.amazonaws.com/",
        "APPROVAL_TIMEOUT_SECONDS": "3600",
        "TEST_CONFIG": "",
    }
    return base | values


# ------------------------------------------------------------------ from_env


def test_given_an_empty_environment_when_read_then_every_default_applies() -> None:
    settings = Settings.from_env({})

    assert settings == Settings(repositories=())
    assert (settings.dev_prefix, settings.test_prefix, settings.prod_prefix) == (
        "ecr-dev",
        "ecr-test",
        "ecr-prod",
    )
    assert settings.version_format == "v{major}.{minor}"
    assert settings.approval_timeout_seconds == 86400
    assert settings.registry_url == ""
    assert settings.tests == {}


def test_given_the_template_environment_when_read_then_every_value_is_taken() -> None:
    settings = Settings.from_env(
        env(
            DEV_PREFIX="d",
            TEST_PREFIX="t",
            PROD_PREFIX="p",
            REGISTRY_URL="http://127.0.0.1:5000",
            VERSION_FORMAT="release-{minor}",
        )
    )

    assert settings.repositories == ("repo-1", "repo-2")
    assert (settings.dev_prefix, settings.test_prefix, settings.prod_prefix) == ("d", "t", "p")
    assert settings.registry_url == "http://127.0.0.1:5000"
    assert settings.version_format == "release-{minor}"
    assert settings.ledger_table == "ledger"
    assert settings.approvals_topic_arn.endswith(":approvals")
    assert settings.notifications_topic_arn.endswith(":notifications")
    assert settings.approval_base_url == "https://abc.execute-api.us-east-1.amazonaws.com/"
    assert settings.approval_timeout_seconds == 3600


def test_given_the_process_environment_when_read_without_argument_then_it_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPOSITORIES", "from-os")
    monkeypatch.delenv("TEST_CONFIG", raising=False)
    monkeypatch.delenv("APPROVAL_TIMEOUT_SECONDS", raising=False)

    assert Settings.from_env().repositories == ("from-os",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("repo-1", ("repo-1",)),
        ("repo-1,repo-2", ("repo-1", "repo-2")),
        (" repo-1 , repo-2 ,", ("repo-1", "repo-2")),
        (",,", ()),
        ("", ()),
    ],
)
def test_repositories_are_a_trimmed_comma_list(raw: str, expected: tuple[str, ...]) -> None:
    assert Settings.from_env(env(REPOSITORIES=raw)).repositories == expected


def test_empty_version_format_and_timeout_fall_back_to_defaults() -> None:
    settings = Settings.from_env(env(VERSION_FORMAT="", APPROVAL_TIMEOUT_SECONDS=""))

    assert settings.version_format == "v{major}.{minor}"
    assert settings.approval_timeout_seconds == 86400


def test_given_a_test_config_when_read_then_each_repository_gets_its_checks() -> None:
    config = {
        "repo-1": {
            "platforms": ["linux/amd64", "linux/arm64"],
            "max_size_mb": 250,
            "labels": ["org.opencontainers.image.source"],
            "non_root": True,
            "scan": {"max": {"CRITICAL": 0, "HIGH": 3}, "unavailable": "fail"},
            "state_machine_arn": "arn:aws:states:us-east-1:123456789012:stateMachine:t",
            "poll_seconds": 5,
        }
    }

    settings = Settings.from_env(env(TEST_CONFIG=json.dumps(config)))

    tests = settings.tests_for("repo-1")
    assert tests.platforms == ["linux/amd64", "linux/arm64"]
    assert tests.max_size_mb == 250
    assert tests.labels == ["org.opencontainers.image.source"]
    assert tests.non_root is True
    assert tests.scan == ScanPolicy(max={"CRITICAL": 0, "HIGH": 3}, unavailable="fail")
    assert tests.state_machine_arn == "arn:aws:states:us-east-1:123456789012:stateMachine:t"
    assert tests.poll_seconds == 5


def test_a_repository_without_test_config_gets_no_checks() -> None:
    settings = Settings.from_env(env(TEST_CONFIG='{"repo-1": {"non_root": true}}'))

    assert settings.tests_for("repo-2") == RepositoryTests()
    assert settings.tests_for("repo-2").state_machine_arn is None


def test_an_empty_scan_policy_allows_no_critical_finding_and_passes_without_a_scan() -> None:
    settings = Settings.from_env(env(TEST_CONFIG='{"repo-1": {"scan": {}}}'))

    assert settings.tests_for("repo-1").scan == ScanPolicy(max={"CRITICAL": 0}, unavailable="pass")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("{not json", ["TEST_CONFIG"]),
        ('["repo-1"]', ["TEST_CONFIG", "JSON object"]),
        ('"repo-1"', ["TEST_CONFIG", "JSON object"]),
        ('{"repo-1": {"max_size_mb": "big"}}', ["TEST_CONFIG", "max_size_mb"]),
        ('{"repo-1": {"nonroot": true}}', ["TEST_CONFIG", "nonroot"]),
        ('{"repo-1": {"scan": {"unavailable": "maybe"}}}', ["TEST_CONFIG", "unavailable"]),
        ('{"repo-1": {"poll_seconds": 0}}', ["TEST_CONFIG", "poll_seconds"]),
        ('{"repo-1": 5}', ["TEST_CONFIG"]),
    ],
)
def test_given_a_bad_test_config_when_read_then_configuration_error_says_what(
    raw: str, words: list[str]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env(TEST_CONFIG=raw))

    for word in words:
        assert word in str(caught.value)


def test_a_bad_test_config_error_names_the_repository_it_is_about() -> None:
    # With several repositories configured, the operator must know which entry is wrong.
    raw = '{"repo-1": {}, "repo-2": {"max_size_mb": "big"}}'

    with pytest.raises(ConfigurationError, match="repo-2"):
        Settings.from_env(env(TEST_CONFIG=raw))


def test_given_a_bad_approval_timeout_when_read_then_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="APPROVAL_TIMEOUT_SECONDS"):
        Settings.from_env(env(APPROVAL_TIMEOUT_SECONDS="one day"))


def test_given_test_config_for_an_unknown_repository_when_read_then_refused() -> None:
    raw = '{"repo-1": {}, "repo-9": {"non_root": true}, "other": {}}'

    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env(TEST_CONFIG=raw))

    message = str(caught.value)
    assert "unknown repositories" in message
    assert "repo-9" in message
    assert "other" in message
    assert "repo-1'" not in message


# --------------------------------------------------------------------- split


SETTINGS = Settings(repositories=("repo-1", "team/app"))


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("ecr-dev/repo-1", ("DEV", "repo-1")),
        ("ecr-test/repo-1", ("TEST", "repo-1")),
        ("ecr-prod/repo-1", ("PROD", "repo-1")),
        ("ecr-dev/team/app", ("DEV", "team/app")),
        ("ecr-prod/team/app", ("PROD", "team/app")),
    ],
)
def test_split_gives_stage_and_name(repository: str, expected: tuple[str, str]) -> None:
    assert SETTINGS.split(repository) == expected


def test_split_follows_custom_prefixes() -> None:
    settings = Settings(
        repositories=("repo-1",), dev_prefix="dev", test_prefix="qa/test", prod_prefix="live"
    )

    assert settings.split("dev/repo-1") == ("DEV", "repo-1")
    assert settings.split("qa/test/repo-1") == ("TEST", "repo-1")
    assert settings.split("live/repo-1") == ("PROD", "repo-1")
    with pytest.raises(RepositoryNotConfigured):
        settings.split("ecr-dev/repo-1")


@pytest.mark.parametrize(
    "repository",
    [
        "ecr-dev/repo-2",  # a name not in Repositories
        "ecr-staging/repo-1",  # not a stage prefix
        "repo-1",  # no prefix at all
        "ecr-dev/",  # prefix only
        "ecr-devrepo-1",  # prefix without the slash
        "ecr-dev/repo-1/extra",  # a longer name than configured
    ],
)
def test_split_refuses_repositories_not_configured(repository: str) -> None:
    with pytest.raises(RepositoryNotConfigured) as caught:
        SETTINGS.split(repository)

    message = str(caught.value)
    assert repr(repository) in message
    assert "ecr-dev/, ecr-test/, ecr-prod/" in message
    assert "repo-1, team/app" in message
    assert "Repositories parameter" in message


def test_split_without_any_repository_says_none_are_configured() -> None:
    with pytest.raises(RepositoryNotConfigured, match="repositories: none"):
        Settings(repositories=()).split("ecr-dev/repo-1")


def test_stage_repository_and_prefix_build_the_names_split_reads() -> None:
    for stage in ("DEV", "TEST", "PROD"):
        name = SETTINGS.stage_repository("team/app", stage)
        assert name.startswith(SETTINGS.prefix(stage) + "/")
        assert SETTINGS.split(name) == (stage, "team/app")


# ------------------------------------------------------------------ SSM parameters


def test_the_repositories_and_the_tests_come_from_the_parameters_the_environment_names() -> None:
    stored = {
        "/image-cicd/s/repositories": "repo-1,repo-2",
        "/image-cicd/s/test-config": '{"repo-2": {"non_root": true}}',
    }
    read: list[str] = []

    def load(name: str) -> str:
        read.append(name)
        return stored[name]

    settings = Settings.from_env(
        {
            "REPOSITORIES_PARAMETER": "/image-cicd/s/repositories",
            "TEST_CONFIG_PARAMETER": "/image-cicd/s/test-config",
        },
        load=load,
    )

    assert settings.repositories == ("repo-1", "repo-2")
    assert settings.tests_for("repo-2").non_root is True
    assert read == list(stored)  # each once


def test_a_parameter_name_without_a_way_to_read_it_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="REPOSITORIES_PARAMETER"):
        Settings.from_env({"REPOSITORIES_PARAMETER": "/image-cicd/s/repositories"})
