"""Verified tokens by digest, until they expire: a repeated token costs a hash, not RSA."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from authz_service.layers.identity.principal import Principal


class VerifiedTokenCache:
    """A bounded LRU of principals keyed by the SHA-256 of the token.

    Entries live until the token's ``exp`` (never longer than ``max_ttl_s``), so a key
    removed at the identity provider stops a cached token within ``max_ttl_s`` at most.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        max_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._max_entries = max_entries
        self._max_ttl_s = max_ttl_s
        self._clock = clock

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, expires_at = entry
        if self._clock() >= expires_at:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return principal

    def put(self, digest: bytes, principal: Principal, exp: float | None) -> None:
        now = self._clock()
        expires_at = now + self._max_ttl_s if exp is None else min(exp, now + self._max_ttl_s)
        self._entries[digest] = (principal, expires_at)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
