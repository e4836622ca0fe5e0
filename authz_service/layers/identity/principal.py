"""Who is asking: the identity every later layer decides on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Method = Literal["jwt", "api_key", "mtls", "anonymous"]


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    tenant: str
    tier: str
    roles: frozenset[str]
    scopes: frozenset[str]
    method: Method
    provider: str
    """The policy's name of the provider that vouched for this principal."""
    credential_id: str = ""
    """Which credential: the API key's id (never the key), the token's ``jti``, the SAN."""

    def metadata(self) -> dict[str, str]:
        """The principal as flat Envoy dynamic metadata (``%DYNAMIC_METADATA(
        envoy.filters.http.ext_authz:subject)%``) and decision-log fields; no secrets."""
        return {
            "subject": self.subject,
            "tenant": self.tenant,
            "tier": self.tier,
            "roles": ",".join(sorted(self.roles)),
            "scopes": " ".join(sorted(self.scopes)),
            "auth_method": self.method,
            "auth_provider": self.provider,
            "credential_id": self.credential_id,
        }
