"""API keys: ``Authorization: Bearer <key>``, keys stored hashed, each mapped to a tenant.

The keys file (``EQUIRECON_API_KEYS_FILE``) holds only sha256 digests::

    {"keys": [{"tenant": "acme", "sha256": "<hex digest of the key>"}]}

``equirecon hash-key`` prints a new random key and its file entry. Without a
keys file the API is open and every job belongs to the anonymous tenant
(``None``). Keys are never logged; only the tenant name is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path

from service.errors import Unauthorized

__all__ = ["KeyRing", "hash_key", "new_key"]


def hash_key(key: str) -> str:
    """The sha256 hex digest a keys file stores for ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class KeyRing:
    """The configured keys: digest -> tenant; ``tenant(header)`` authenticates a request."""

    def __init__(self, digests: dict[str, str]) -> None:
        self._digests = dict(digests)

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read a keys file; a malformed one is refused (ValueError) at startup."""
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: expected {{'keys': [{{'tenant', 'sha256'}}, ...]}}")
        digests: dict[str, str] = {}
        for i, entry in enumerate(entries):
            tenant, digest = entry.get("tenant"), str(entry.get("sha256", "")).lower()
            if not isinstance(tenant, str) or not tenant or len(digest) != 64:
                raise ValueError(f"{path}: keys[{i}] needs a tenant and a 64-hex sha256")
            int(digest, 16)  # ValueError if not hex
            digests[digest] = tenant
        return cls(digests)

    def tenant(self, authorization: str | None) -> str:
        """The tenant of a ``Bearer`` credential, or :class:`Unauthorized`."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        digest = hash_key(key.strip())
        found = None
        for known, tenant in self._digests.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                found = tenant
        if found is None:
            raise Unauthorized("the API key is not valid")
        return found
