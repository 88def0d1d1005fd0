"""Reach into a real docker-registry's filesystem storage, as bad luck would."""

from __future__ import annotations

from image_cicd.local.registry import RegistryServer


def corrupt_blob(server: RegistryServer, digest: str) -> None:
    """Flip one byte of the blob's file in the registry's storage (same size): the
    registry serves it as it is, under the digest it no longer hashes to."""
    hexd = digest.split(":")[1]
    data = server.storage_dir / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
