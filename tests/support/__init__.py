"""Test helpers: a Bearer token server, a fault-injecting proxy, fixture results."""

from __future__ import annotations

from dataclasses import dataclass

from image_cicd.local.registry import RegistryServer

from .token_server import TokenServer


@dataclass(frozen=True)
class BasicRegistry:
    """What the ``basic_registry`` fixture yields."""

    server: RegistryServer
    username: str
    password: str


@dataclass(frozen=True)
class TokenRegistry:
    """What the ``token_registry`` fixture yields."""

    server: RegistryServer
    token_server: TokenServer
    username: str
    password: str
