"""Client details against the real registry: tag pagination, ECR credentials."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from image_cicd.local.registry import RegistryServer
from image_cicd.registry.client import RegistryClient
from image_cicd.registry.connect import registry_from_url
from image_cicd.registry.copy import copy_image
from image_cicd.registry.errors import Unauthorized
from image_cicd.registry.synthetic import build_image, push_image


def test_catalog_follows_link_pages(registry: RegistryServer) -> None:
    client = RegistryClient(registry.url)
    image = build_image(layers=1, layer_size=100)
    names = [f"ecr-prod/app-{n}" for n in range(5)]
    for name in names:
        push_image(client, name, image)
    before = client.requests_made

    listed = client.catalog(page_size=2)

    assert listed == sorted(names)
    assert client.requests_made - before == 3  # pages of 2, 2 and 1


def test_tags_follow_link_pages() -> None:
    """docker-registry 2.8 answers tags/list in one page, so a small server that pages
    (as ECR and other registries do) stands in for it here."""
    pages = {
        "/v2/app/tags/list?n=1000": (["v0.1", "v0.2"], "</v2/app/tags/list?n=2&last=v0.2>"),
        "/v2/app/tags/list?n=2&last=v0.2": (["v0.3", "v0.4"], "</v2/app/tags/list?n=2&last=v0.4>"),
        "/v2/app/tags/list?n=2&last=v0.4": (["latest"], None),
    }

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            tags, link = pages[self.path]
            body = json.dumps({"name": "app", "tags": tags}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if link:
                self.send_header("Link", f'{link}; rel="next"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = RegistryClient(f"http://127.0.0.1:{server.server_address[1]}")
        assert client.list_tags("app") == ["v0.1", "v0.2", "v0.3", "v0.4", "latest"]
        assert client.requests_made == 3
    finally:
        server.shutdown()
        server.server_close()


def test_ecr_credentials_from_get_authorization_token(tmp_path: Path) -> None:
    """The ECR path: a token from GetAuthorizationToken, sent as Basic AWS:<password>
    (here to a real registry that has exactly that user)."""
    with mock_aws():
        ecr = boto3.client("ecr", region_name="eu-west-1")
        data = ecr.get_authorization_token()["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        assert user == "AWS"
        with RegistryServer(tmp_path / "registry", users={user: password}) as server:
            client = registry_from_url("", ecr)
            assert client.base_url == data["proxyEndpoint"]
            # Same credentials, pointed at the local registry instead of ECR's endpoint.
            local = RegistryClient(server.url, credentials=client.credentials)
            image = build_image(layers=2, layer_size=1000)
            push_image(local, "ecr-dev/app", image)

            result = copy_image(local, "ecr-dev/app", image.digest, local, "ecr-test/app")

            assert result.blobs_mounted == 3
            with pytest.raises(Unauthorized):  # the registry does require the token
                RegistryClient(server.url).list_tags("ecr-test/app")
