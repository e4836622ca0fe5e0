"""Layer 1, identity: JWT (JWKS file, JWKS URI, OIDC discovery), API keys and mTLS peer
identities become one :class:`Principal` (subject, tenant, tier, roles, scopes).

Missing or invalid credentials → 401 with ``WWW-Authenticate`` (RFC 6750 error codes);
valid but insufficient → 403. Keys are fetched in the background; a repeated token is
served from a verification cache.
"""

from authz_service.layers.identity.layer import IdentityLayer
from authz_service.layers.identity.principal import Principal

__all__ = ["IdentityLayer", "Principal"]
