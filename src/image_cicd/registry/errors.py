"""Typed registry errors, built from the OCI error body `{"errors": [{"code", "message"}]}`."""

from __future__ import annotations

import json
from typing import Any, ClassVar


class RegistryError(Exception):
    """An error reported by a registry (or met while talking to one)."""

    code: ClassVar[str] = "UNKNOWN"

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code != "UNKNOWN" else self.message


class BlobUnknown(RegistryError):
    code = "BLOB_UNKNOWN"


class BlobUploadUnknown(RegistryError):
    code = "BLOB_UPLOAD_UNKNOWN"


class BlobUploadInvalid(RegistryError):
    code = "BLOB_UPLOAD_INVALID"


class DigestInvalid(RegistryError):
    code = "DIGEST_INVALID"


class ManifestBlobUnknown(RegistryError):
    code = "MANIFEST_BLOB_UNKNOWN"


class ManifestInvalid(RegistryError):
    code = "MANIFEST_INVALID"


class ManifestTooLarge(ManifestInvalid):
    """The registry refuses a manifest this large (Amazon ECR: more than 4 MiB)."""

    code = "MANIFEST_TOO_LARGE"


class ManifestUnknown(RegistryError):
    code = "MANIFEST_UNKNOWN"


class NameInvalid(RegistryError):
    code = "NAME_INVALID"


class NameUnknown(RegistryError):
    code = "NAME_UNKNOWN"


class SizeInvalid(RegistryError):
    code = "SIZE_INVALID"


class TagInvalid(RegistryError):
    code = "TAG_INVALID"


class Unauthorized(RegistryError):
    code = "UNAUTHORIZED"


class Denied(RegistryError):
    code = "DENIED"


class Unsupported(RegistryError):
    code = "UNSUPPORTED"


class TooManyRequests(RegistryError):
    code = "TOOMANYREQUESTS"


class TagImmutable(RegistryError):
    """The destination refuses to move a tag (ECR with IMMUTABLE tags)."""

    code = "TAG_IMMUTABLE"


class RegistryUnavailable(RegistryError):
    """The registry did not answer usefully after retries (5xx, 429, connection errors)."""

    code = "REGISTRY_UNAVAILABLE"


class CredentialsRenewed(RegistryUnavailable):
    """The registry refused expired credentials during a transfer whose body cannot be
    sent again; new ones are in place, so the transfer is to start over (retryable)."""

    code = "CREDENTIALS_RENEWED"


class DigestMismatch(RegistryError):
    """Content did not hash to the digest it was fetched or stored by."""

    code = "DIGEST_MISMATCH"


_BY_CODE: dict[str, type[RegistryError]] = {
    cls.code: cls
    for cls in (
        BlobUnknown,
        BlobUploadUnknown,
        BlobUploadInvalid,
        DigestInvalid,
        ManifestBlobUnknown,
        ManifestInvalid,
        ManifestUnknown,
        NameInvalid,
        NameUnknown,
        SizeInvalid,
        TagInvalid,
        Unauthorized,
        Denied,
        Unsupported,
        TooManyRequests,
    )
}


def error_from_response(status: int, body: bytes, context: str) -> RegistryError:
    """Turn an error response into the matching typed exception."""
    code, message, detail = "", "", None
    try:
        errors = json.loads(body or b"{}").get("errors") or []
        if errors and isinstance(errors[0], dict):
            code = str(errors[0].get("code", ""))
            message = str(errors[0].get("message", ""))
            detail = errors[0].get("detail")
    except (ValueError, AttributeError):
        pass
    text = f"{context}: {message or f'HTTP {status}'}"
    if code == "TAG_INVALID" and "immutable" in message.lower():
        return TagImmutable(
            f"{text}. Let latest move: set the repository's tag mutability to MUTABLE, or to "
            "IMMUTABLE_WITH_EXCLUSION with an exclusion for 'latest'",
            status=status,
            detail=detail,
        )
    if status == 413 or (
        code in ("UNSUPPORTED", "MANIFEST_INVALID")
        and "'ImageManifest'" in message
        and "length" in message
    ):
        return ManifestTooLarge(
            f"{text}. The manifest is larger than the registry takes (Amazon ECR: 4 MiB, "
            "a limit that cannot be raised); the image cannot be copied there as it is",
            status=status,
            detail=detail,
        )
    cls = _BY_CODE.get(code)
    if cls is None:
        if status == 401:
            cls = Unauthorized
        elif status == 403:
            cls = Denied
        elif status == 404:
            cls = NameUnknown if "/manifests/" not in context else ManifestUnknown
        elif status == 429:
            cls = TooManyRequests
        elif status >= 500:
            cls = RegistryUnavailable
        else:
            cls = RegistryError
    return cls(text, status=status, detail=detail)
