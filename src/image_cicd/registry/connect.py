"""Make a client for a registry host, with the right credentials.

Amazon ECR hosts (`<account>.dkr.ecr.<region>.amazonaws.com`) get a token from
`GetAuthorizationToken`; other hosts use the credentials given, or those in the
Docker client configuration (`~/.docker/config.json`, `auths`), or none.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

from image_cicd.registry.auth import CredentialsProvider, EcrCredentials, static_credentials
from image_cicd.registry.client import RegistryClient

_ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


def ecr_host(host: str) -> tuple[str, str] | None:
    """(account, region) when `host` is an Amazon ECR registry."""
    match = _ECR_HOST.match(host)
    return (match.group(1), match.group(2)) if match else None


def docker_config_credentials(host: str) -> CredentialsProvider | None:
    path = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    for key in (host, f"https://{host}", f"http://{host}"):
        encoded = (auths.get(key) or {}).get("auth")
        if encoded:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
            return static_credentials(user, password)
    return None


def client_for(
    host: str,
    *,
    insecure: bool = False,
    credentials: str | None = None,
    **options: Any,
) -> RegistryClient:
    """A client for `host`; `credentials` is `user:password`."""
    provider: CredentialsProvider | None
    ecr = ecr_host(host)
    if credentials:
        user, _, password = credentials.partition(":")
        provider = static_credentials(user, password)
    elif ecr:
        import boto3

        provider = EcrCredentials(boto3.client("ecr", region_name=ecr[1]), registry_id=ecr[0])
    else:
        provider = docker_config_credentials(host)
    if ecr:  # ECR takes layer parts of at most 20 MiB through the Docker API
        options.setdefault("upload_chunk_size", 16 << 20)
    return RegistryClient.for_host(host, insecure=insecure, credentials=provider, **options)


def registry_from_url(url: str, ecr_client: Any = None, **options: Any) -> RegistryClient:
    """The stage registry of a deployment: `url`, or (empty) this account's Amazon ECR."""
    if url:
        return RegistryClient(url, **options)
    if ecr_client is None:
        import boto3

        ecr_client = boto3.client("ecr")
    credentials = EcrCredentials(ecr_client)
    credentials()  # learns the endpoint (https://<account>.dkr.ecr.<region>.amazonaws.com)
    options.setdefault("upload_chunk_size", 16 << 20)
    return RegistryClient(credentials.endpoint, credentials=credentials, **options)
