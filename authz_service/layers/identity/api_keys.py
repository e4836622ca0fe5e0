"""API keys: stored hashed, looked up by digest, compared in constant time.

Keys are long random strings (``authz-service api-key new`` makes them), so one round
of SHA-256 is the right hash: unlike passwords there is nothing to brute-force, and a
slow hash would put milliseconds on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

HASH_PREFIX = "sha256:"
KEY_PREFIX = "ak_"


def hash_key(key: str) -> str:
    """The form a key is stored in the policy: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh key with 256 bits of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_id: str
    """Shown in logs and metadata instead of the key."""
    digest: bytes
    owner: int
    """Index of the principal this key belongs to."""


class KeyRing:
    """Every configured key of one provider, by digest."""

    def __init__(self, keys: Iterable[StoredKey]) -> None:
        self._by_digest = {key.digest: key for key in keys}

    def find(self, presented: str) -> StoredKey | None:
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        candidate = self._by_digest.get(digest)
        # The dict lookup compares digests of attacker input, which leak nothing about a
        # stored key; the constant-time compare makes that explicit and future-proof.
        if candidate is not None and hmac.compare_digest(candidate.digest, digest):
            return candidate
        return None


def parse_hash(text: str) -> bytes:
    """``sha256:<64 hex>`` → the digest; ``ValueError`` naming what is wrong."""
    if not text.startswith(HASH_PREFIX):
        raise ValueError(f"a key hash starts with {HASH_PREFIX!r} (authz-service api-key hash)")
    digest = bytes.fromhex(text.removeprefix(HASH_PREFIX))
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError("a sha256 key hash has 64 hex digits")
    return digest
