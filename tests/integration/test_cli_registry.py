"""`image-cicd copy` and `image-cicd push` against the real registry."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from support.ecr_registry import EcrProxy

from image_cicd.cli.main import main
from image_cicd.local.registry import RegistryServer
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.synthetic import build_image, push_image


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_copy_by_tag_keeps_the_tag_and_reports_json(registry: RegistryServer) -> None:
    client = RegistryClient(registry.url)
    image = build_image(layers=2, layer_size=50_000, platforms=["linux/amd64", "linux/arm64"])
    push_image(client, "ecr-dev/app", image, tags=["1.0"])

    code, out = run(
        "copy",
        "--insecure",
        "--json",
        f"{registry.host}/ecr-dev/app:1.0",
        f"{registry.host}/ecr-test/app",
    )

    assert code == 0, out
    result = json.loads(out)
    assert result["digest"] == image.digest
    assert result["tags"] == ["1.0"]
    assert result["blobs_mounted"] == 6
    assert result["bytes_moved"] == 0
    assert client.get_manifest("ecr-test/app", "1.0").data == image.manifest.data


def test_copy_with_mounts_refused_tells_how_to_turn_mounting_on(
    registry: RegistryServer, ecr_proxy: Callable[..., EcrProxy]
) -> None:
    proxy = ecr_proxy(registry.url)  # ECR with BLOB_MOUNTING off (the default)
    image = build_image(layers=2, layer_size=50_000)
    push_image(RegistryClient(proxy.url), "ecr-dev/app", image, tags=["1.0"])

    code, out = run(
        "copy", "--insecure", f"{proxy.host}/ecr-dev/app:1.0", f"{proxy.host}/ecr-test/app"
    )

    assert code == 0, out
    assert "0 mounted, 3 copied" in out
    assert "3 mounts refused" in out
    assert "aws ecr put-account-setting --name BLOB_MOUNTING --value ENABLED" in out
    assert RegistryClient(registry.url).get_manifest("ecr-test/app", "1.0").data == (
        image.manifest.data
    )


def test_copy_across_registries_with_no_mount(
    registry_pair: tuple[RegistryServer, RegistryServer],
) -> None:
    a, b = registry_pair
    image = build_image(layers=2, layer_size=40_000)
    push_image(RegistryClient(a.url), "src", image)

    code, out = run(
        "copy",
        "--insecure",
        "--no-mount",
        "--workers",
        "2",
        f"{a.host}/src@{image.digest}",
        f"{b.host}/dst:v1",
    )

    assert code == 0, out
    assert "copied" in out
    assert RegistryClient(b.url).get_manifest("dst", "v1").digest == image.digest


def test_copy_errors_are_one_line(registry: RegistryServer) -> None:
    for args, message in [
        (("copy", "nohost", f"{registry.host}/x"), "expected host[:port]/repository"),
        (
            ("copy", "--insecure", f"{registry.host}/missing:1", f"{registry.host}/x"),
            "MANIFEST_UNKNOWN",
        ),
        (("copy", "--insecure", "127.0.0.1:1/a:b", f"{registry.host}/x"), "did not answer"),
    ]:
        code, out = run(*args)
        assert code == 1, out
        assert message in out
        assert len(out.strip().splitlines()) == 1


def test_push_an_oci_layout_keeps_its_digest(registry: RegistryServer, tmp_path: Path) -> None:
    client = RegistryClient(registry.url)
    image = build_image(layers=2, layer_size=30_000)
    push_image(client, "ecr-dev/source", image, tags=["latest"])
    layout = tmp_path / "layout"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            f"docker://{registry.host}/ecr-dev/source:latest",
            f"oci:{layout}:latest",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )

    code, out = run(
        "push",
        "--registry",
        registry.host,
        "--insecure",
        "--json",
        "--oci-layout",
        str(layout),
        "ecr-dev/from-layout:v1",
    )

    assert code == 0, out
    assert json.loads(out)["digest"] == image.digest
    assert client.get_manifest("ecr-dev/from-layout", "v1").data == image.manifest.data


def test_push_a_synthetic_image_to_any_registry(registry: RegistryServer) -> None:
    code, out = run(
        "push",
        "--registry",
        registry.host,
        "--insecure",
        "--json",
        "--layers",
        "2",
        "--size",
        "64KiB",
        "--platforms",
        "linux/amd64,linux/arm64",
        "--label",
        "team=platform",
        "ecr-dev/synthetic",
    )

    assert code == 0, out
    pushed = json.loads(out)
    manifest = RegistryClient(registry.url).get_manifest("ecr-dev/synthetic", "latest")
    assert manifest.digest == pushed["digest"]
    assert manifest.platforms == ["linux/amd64", "linux/arm64"]
