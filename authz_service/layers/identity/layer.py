"""Layer 1, identity: credentials → one Principal, or a 401/403 that says why."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from authz_service.decision import Denial
from authz_service.layers.base import Context, LayerName
from authz_service.layers.identity.api_keys import KeyRing
from authz_service.layers.identity.claims import claim_set, claim_text
from authz_service.layers.identity.jwks import (
    FileJwks,
    JwksSource,
    KeyCache,
    OidcDiscoveryJwks,
    UriJwks,
)
from authz_service.layers.identity.jwt_verifier import JwtVerifier, TokenRejected, split_token
from authz_service.layers.identity.principal import Principal
from authz_service.layers.identity.settings import (
    IdentityRoute,
    IdentitySettings,
    JwtProvider,
    KeyOwner,
    TokenLocation,
)
from authz_service.layers.identity.token_cache import VerifiedTokenCache
from authz_service.request_view import RequestView

REALM = "authz-service"
API_KEY_SCHEME = "ApiKey"
CERTIFICATE_SCHEME = "ClientCertificate"
"""Not registered schemes: they tell a client which credential the route wants."""


class IdentityLayer:
    name: LayerName = "identity"

    def __init__(self, settings: IdentitySettings) -> None:
        self._settings = settings
        self._key_caches: dict[str, KeyCache] = {
            provider.name: KeyCache(
                _key_source(provider),
                refresh_interval_s=provider.refresh_interval_s,
                min_refetch_interval_s=provider.min_refetch_interval_s,
            )
            for provider in settings.jwt
            if provider.hmac_secret is None
        }
        self._verifiers = [
            JwtVerifier(provider, self._key_caches.get(provider.name)) for provider in settings.jwt
        ]
        self._rings = [(provider, KeyRing(provider.keys)) for provider in settings.api_keys]
        self._token_locations = tuple(dict.fromkeys(p.token for p in settings.jwt))
        self._max_token_bytes = max((p.max_token_bytes for p in settings.jwt), default=8192)
        self._cache = VerifiedTokenCache()

    # ---- lifecycle: keys are fetched in the background, never on the request path ----

    async def start(self) -> None:
        await asyncio.gather(*(cache.start() for cache in self._key_caches.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(cache.stop() for cache in self._key_caches.values()))

    @property
    def ready(self) -> bool:
        """Every provider that must have keys at start has them."""
        return all(
            self._key_caches[provider.name].ready
            for provider in self._settings.jwt
            if provider.required_at_start and provider.name in self._key_caches
        )

    # ---- the check ----

    async def check(self, ctx: Context) -> Denial | None:
        assert ctx.route is not None  # the protocol layer denied unrouted requests
        route = ctx.route.identity
        view = ctx.view
        if route.require_mtls and not view.source.principal:
            return _unauthenticated(
                "mtls_required",
                "this route needs a client certificate",
                f'{CERTIFICATE_SCHEME} realm="{REALM}"',
            )
        try:
            principal = await self._authenticate(view, route)
        except TokenRejected as rejected:
            if rejected.status != 401:
                retry = {"retry-after": "1"} if rejected.status == 503 else {}
                return Denial(
                    rejected.status, f"identity.{rejected.reason}", rejected.message, retry
                )
            return _unauthenticated(
                rejected.reason, rejected.message, _challenge(rejected, self._scheme_of(rejected))
            )
        if principal is None:
            if not route.anonymous:
                return _unauthenticated(
                    "missing_credentials", "this route needs credentials", self._challenges(route)
                )
            principal = Principal(
                "anonymous", "anonymous", route.anonymous_tier, frozenset(), frozenset(),
                "anonymous", "",
            )  # fmt: skip
        denial = _check_requirements(principal, route)
        if denial is not None:
            return denial
        self._hand_on(ctx, principal, route)
        return None

    async def _authenticate(self, view: RequestView, route: IdentityRoute) -> Principal | None:
        for provider, ring in self._rings:
            presented = view.headers.get(provider.header)
            if presented is None or not _accepts(route, provider.name):
                continue
            stored = ring.find(presented)
            if stored is None:
                raise TokenRejected("invalid_api_key", "the API key is not valid")
            return _owned(provider.owners[stored.owner], "api_key", provider.name, stored.key_id)
        token = self._token(view) if self._accepts_tokens(route) else None
        if token is not None:
            return await self._verify(token, route)
        if view.source.principal:
            return self._mtls_principal(view.source.principal, route)
        return None

    def _accepts_tokens(self, route: IdentityRoute) -> bool:
        """A token is a credential only where a JWT provider is accepted, like an API key."""
        return any(_accepts(route, provider.name) for provider in self._settings.jwt)

    def _token(self, view: RequestView) -> str | None:
        for location in self._token_locations:
            token = _token_at(view, location)
            if token:
                return token
        return None

    async def _verify(self, token: str, route: IdentityRoute) -> Principal:
        digest = self._cache.digest(token)
        cached = self._cache.get(digest)
        if cached is not None and _accepts(route, cached.provider):
            return cached
        header, unverified = split_token(token, self._max_token_bytes)
        verifier, claims = await self._verify_with_issuer(
            token, header, unverified.get("iss"), route
        )
        principal = _jwt_principal(verifier.provider, claims)
        exp = claims.get("exp")
        self._cache.put(digest, principal, float(exp) if isinstance(exp, int | float) else None)
        return principal

    async def _verify_with_issuer(
        self, token: str, header: dict[str, object], issuer: object, route: IdentityRoute
    ) -> tuple[JwtVerifier, dict[str, object]]:
        """The first accepted provider of the token's issuer that verifies it (one issuer
        may serve several providers, e.g. one per audience); else its first refusal."""
        first_refusal: TokenRejected | None = None
        for verifier in self._verifiers:
            if verifier.provider.issuer != issuer or not _accepts(route, verifier.provider.name):
                continue
            if len(token) > verifier.provider.max_token_bytes:
                first_refusal = first_refusal or TokenRejected(
                    "token_too_large", "the token is too large"
                )
                continue
            try:
                return verifier, await verifier.verify(token, header)
            except TokenRejected as refused:
                first_refusal = first_refusal or refused
        raise first_refusal or TokenRejected(
            "wrong_issuer", "the token is not from an accepted issuer"
        )

    def _mtls_principal(self, san: str, route: IdentityRoute) -> Principal | None:
        providers = [p for p in self._settings.mtls if _accepts(route, p.name)]
        if not providers:
            return None  # a certificate this route does not use is not a credential here
        for provider in providers:
            for identity in provider.identities:
                if identity.matches(san):
                    return _owned(identity.owner, "mtls", provider.name, san, subject=san)
        raise TokenRejected("unknown_client_certificate", "the client certificate is not known")

    def _challenges(self, route: IdentityRoute) -> str:
        """One challenge per kind of credential the route accepts (RFC 7235: a 401 has one)."""
        challenges = []
        if self._accepts_tokens(route):
            challenges.append(f'Bearer realm="{REALM}"')
        for provider in self._settings.api_keys:
            if _accepts(route, provider.name):
                challenges.append(f'{API_KEY_SCHEME} realm="{REALM}", header="{provider.header}"')
        if any(_accepts(route, provider.name) for provider in self._settings.mtls):
            challenges.append(f'{CERTIFICATE_SCHEME} realm="{REALM}"')
        return ", ".join(challenges) or f'Bearer realm="{REALM}"'

    @staticmethod
    def _scheme_of(rejected: TokenRejected) -> str:
        if rejected.reason == "invalid_api_key":
            return API_KEY_SCHEME
        if rejected.reason == "unknown_client_certificate":
            return CERTIFICATE_SCHEME
        return "Bearer"

    def _hand_on(self, ctx: Context, principal: Principal, route: IdentityRoute) -> None:
        ctx.principal = principal
        ctx.metadata.update(principal.metadata())
        names = self._settings.headers
        ctx.upstream_headers[names.subject] = principal.subject
        ctx.upstream_headers[names.tenant] = principal.tenant
        ctx.upstream_headers[names.tier] = principal.tier
        if not route.forward_credentials:
            ctx.headers_to_remove.extend(self._credential_headers(ctx.view))

    def _credential_headers(self, view: RequestView) -> Iterator[str]:
        for location in self._token_locations:
            if location.header is not None and location.header in view.headers:
                yield location.header
        for provider in self._settings.api_keys:
            if provider.header in view.headers:
                yield provider.header


def _key_source(provider: JwtProvider) -> JwksSource:
    if provider.jwks_file is not None:
        return FileJwks(Path(provider.jwks_file))
    if provider.jwks_uri is not None:
        return UriJwks(provider.jwks_uri, timeout_s=provider.fetch_timeout_s)
    return OidcDiscoveryJwks(provider.issuer, timeout_s=provider.fetch_timeout_s)


def _accepts(route: IdentityRoute, provider: str) -> bool:
    return route.providers is None or provider in route.providers


def _token_at(view: RequestView, location: TokenLocation) -> str | None:
    if location.cookie is not None:
        for pair in view.headers.get("cookie", "").split(";"):
            name, _, value = pair.strip().partition("=")
            if name == location.cookie and value:
                return value
        return None
    raw = view.headers.get(location.header or "", "")
    if location.scheme is None:
        return raw.strip() or None
    scheme, _, token = raw.strip().partition(" ")
    return token.strip() or None if scheme.lower() == location.scheme.lower() else None


def _owned(
    owner: KeyOwner, method: str, provider: str, credential_id: str, subject: str | None = None
) -> Principal:
    return Principal(
        subject=subject or owner.subject,
        tenant=owner.tenant,
        tier=owner.tier,
        roles=owner.roles,
        scopes=owner.scopes,
        method=method,  # type: ignore[arg-type]
        provider=provider,
        credential_id=credential_id,
    )


def _jwt_principal(provider: JwtProvider, claims: dict[str, object]) -> Principal:
    mapping = provider.claims
    subject = claim_text(claims, mapping.subject)
    if subject is None:
        raise TokenRejected("missing_claim", f"the token has no {mapping.subject.claim!r} claim")
    jti = claims.get("jti")
    return Principal(
        subject=subject,
        tenant=claim_text(claims, mapping.tenant) or "default",
        tier=claim_text(claims, mapping.tier) or "free",
        roles=claim_set(claims, mapping.roles),
        scopes=claim_set(claims, mapping.scopes),
        method="jwt",
        provider=provider.name,
        credential_id=jti if isinstance(jti, str) else "",
    )


def _check_requirements(principal: Principal, route: IdentityRoute) -> Denial | None:
    missing = route.require_scopes - principal.scopes
    if missing:
        scope = " ".join(sorted(route.require_scopes))
        return Denial(
            403,
            "identity.insufficient_scope",
            "missing scopes: " + ", ".join(sorted(missing)),
            headers={
                "www-authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", '
                f'scope="{scope}"'
            },
        )
    if route.require_roles and not route.require_roles & principal.roles:
        return Denial(
            403,
            "identity.insufficient_role",
            "this route needs one of the roles: " + ", ".join(sorted(route.require_roles)),
        )
    return None


def _challenge(rejected: TokenRejected, scheme: str) -> str:
    # RFC 6750 §3: error_description is printable ASCII without '"' and '\'; it is built
    # from our own words only, and cleaned anyway because it ends up in a header.
    description = "".join(
        char for char in rejected.message if " " <= char <= "~" and char not in '"\\'
    )[:200]
    error = "invalid_token" if scheme == "Bearer" else "invalid_credentials"
    return f'{scheme} realm="{REALM}", error="{error}", error_description="{description}"'


def _unauthenticated(reason: str, message: str, challenge: str) -> Denial:
    return Denial(401, f"identity.{reason}", message, headers={"www-authenticate": challenge})
