"""The identity layer's part of the policy: providers (top-level ``identity:``) and the
per-route ``identity:`` block, with their schema fragments and cross-checks."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz_service.layers.identity.api_keys import StoredKey, parse_hash
from authz_service.layers.identity.claims import ClaimMapping, ClaimRule

KeyPath = tuple[str | int, ...]

ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
MIN_HMAC_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
"""RFC 7518 §3.2: a key at least as long as the hash output."""


# ---- compiled settings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenLocation:
    header: str | None = "authorization"
    scheme: str | None = "Bearer"
    cookie: str | None = None


@dataclass(frozen=True, slots=True)
class JwtProvider:
    name: str
    issuer: str
    audiences: tuple[str, ...]
    algorithms: frozenset[str]
    jwks_file: Path | None = None
    jwks_uri: str | None = None
    oidc_discovery: bool = False
    hmac_secret: bytes | None = field(default=None, repr=False)
    refresh_interval_s: float = 300.0
    min_refetch_interval_s: float = 10.0
    fetch_timeout_s: float = 2.0
    required_at_start: bool = True
    leeway_s: int = 30
    max_lifetime_s: int | None = 86_400
    require_exp: bool = True
    typ: str | None = None
    max_token_bytes: int = 8192
    token: TokenLocation = field(default_factory=TokenLocation)
    claims: ClaimMapping = field(default_factory=ClaimMapping)


@dataclass(frozen=True, slots=True)
class KeyOwner:
    subject: str
    tenant: str
    tier: str
    roles: frozenset[str]
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class ApiKeyProvider:
    name: str
    header: str
    owners: tuple[KeyOwner, ...]
    keys: tuple[StoredKey, ...]


@dataclass(frozen=True, slots=True)
class MtlsIdentity:
    san: str
    """Exact SAN, or a prefix when it ends with ``*``."""
    owner: KeyOwner

    def matches(self, principal: str) -> bool:
        if self.san.endswith("*"):
            return principal.startswith(self.san[:-1])
        return principal == self.san


@dataclass(frozen=True, slots=True)
class MtlsProvider:
    name: str
    identities: tuple[MtlsIdentity, ...]


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    subject: str = "x-authz-subject"
    tenant: str = "x-authz-tenant"
    tier: str = "x-authz-tier"


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    jwt: tuple[JwtProvider, ...] = ()
    api_keys: tuple[ApiKeyProvider, ...] = ()
    mtls: tuple[MtlsProvider, ...] = ()
    headers: IdentityHeaders = field(default_factory=IdentityHeaders)


@dataclass(frozen=True, slots=True)
class IdentityRoute:
    providers: frozenset[str] | None = None
    """Providers this route accepts; ``None`` accepts all of them."""
    anonymous: bool = False
    anonymous_tier: str = "anonymous"
    require_scopes: frozenset[str] = frozenset()
    require_roles: frozenset[str] = frozenset()
    require_mtls: bool = False
    forward_credentials: bool = False


# ---- schema ------------------------------------------------------------------------------

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
_HEADER = {"type": "string", "pattern": r"^[a-z0-9-]+$"}
_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}
_CLAIM_RULE = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["claim"],
            "properties": {
                "claim": {"type": "string", "minLength": 1},
                "default": {"type": "string"},
            },
        },
    ]
}
_OWNER_PROPERTIES: dict[str, Any] = {
    "subject": {"type": "string", "minLength": 1},
    "tenant": {"type": "string", "minLength": 1},
    "tier": {"type": "string", "minLength": 1},
    "roles": _STRINGS,
    "scopes": _STRINGS,
}

_JWT_PROVIDER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "issuer", "audiences", "algorithms", "keys"],
    "properties": {
        "name": _NAME,
        "issuer": {"type": "string", "minLength": 1},
        "audiences": {**_STRINGS, "minItems": 1},
        "algorithms": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"enum": [*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS]},
        },
        "keys": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "oidc_discovery": {"const": True},
                "jwks_uri": {"type": "string", "pattern": "^https?://"},
                "jwks_file": {"type": "string", "minLength": 1},
                "secret_env": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$"},
            },
        },
        "refresh_interval_s": {"type": "number", "minimum": 1},
        "min_refetch_interval_s": {"type": "number", "exclusiveMinimum": 0},
        "fetch_timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 30},
        "required_at_start": {"type": "boolean"},
        "leeway_s": {"type": "integer", "minimum": 0, "maximum": 300},
        "max_lifetime_s": {"type": ["integer", "null"], "minimum": 1},
        "require_exp": {"type": "boolean"},
        "typ": {"type": "string", "minLength": 1},
        "max_token_bytes": {"type": "integer", "minimum": 256, "maximum": 65536},
        "token": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "header": _HEADER,
                "scheme": {"type": "string", "pattern": "^[A-Za-z]+$"},
                "cookie": {"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
            },
        },
        "claims": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                name: _CLAIM_RULE for name in ("subject", "tenant", "tier", "roles", "scopes")
            },
        },
    },
}

_API_KEY_PROVIDER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "principals"],
    "properties": {
        "name": _NAME,
        "header": _HEADER,
        "principals": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["subject", "keys"],
                "properties": {
                    **_OWNER_PROPERTIES,
                    "keys": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["id", "hash"],
                            "properties": {
                                "id": {"type": "string", "minLength": 1},
                                "hash": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}

_MTLS_PROVIDER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "principals"],
    "properties": {
        "name": _NAME,
        "principals": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["san"],
                "properties": {**_OWNER_PROPERTIES, "san": {"type": "string", "minLength": 1}},
            },
        },
    },
}

SECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "jwt": {"type": "array", "items": _JWT_PROVIDER},
        "api_keys": {"type": "array", "items": _API_KEY_PROVIDER},
        "mtls": {"type": "array", "items": _MTLS_PROVIDER},
        "headers": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"subject": _HEADER, "tenant": _HEADER, "tier": _HEADER},
        },
    },
}
"""The top-level ``identity:`` section of the policy file."""

ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "providers": {**_STRINGS, "minItems": 1},
        "anonymous": {"type": "boolean"},
        "anonymous_tier": {"type": "string", "minLength": 1},
        "require_scopes": _STRINGS,
        "require_roles": _STRINGS,
        "require_mtls": {"type": "boolean"},
        "forward_credentials": {"type": "boolean"},
    },
}
"""The ``identity:`` block of a route (and of ``defaults``)."""


# ---- cross-checks (run on any shape: the schema may have failed) -------------------------


def cross_check(data: Mapping[str, Any], policy_dir: Path) -> Iterator[tuple[KeyPath, str]]:
    """What the schema cannot say: unique names, secrets, files, hashes, references."""
    section = data.get("identity")
    section = section if isinstance(section, dict) else {}
    names: set[str] = set()
    for kind in ("jwt", "api_keys", "mtls"):
        providers = section.get(kind)
        for index, provider in enumerate(providers if isinstance(providers, list) else []):
            if not isinstance(provider, dict):
                continue
            path: KeyPath = ("identity", kind, index)
            name = provider.get("name")
            if isinstance(name, str):
                if name in names:
                    yield (*path, "name"), f"provider name {name!r} is used twice"
                names.add(name)
            if kind == "jwt":
                yield from _check_jwt(provider, path, policy_dir)
            if kind == "api_keys":
                yield from _check_api_keys(provider, path)
    yield from _check_route_references(data, names)


def _check_jwt(
    provider: Mapping[str, Any], path: KeyPath, policy_dir: Path
) -> Iterator[tuple[KeyPath, str]]:
    keys = _mapping(provider.get("keys"))
    algorithms = _sequence(provider.get("algorithms"))
    wants_hmac = any(alg in HMAC_ALGORITHMS for alg in algorithms)
    wants_asymmetric = any(alg in ASYMMETRIC_ALGORITHMS for alg in algorithms)
    secret_env = keys.get("secret_env")
    if wants_hmac and wants_asymmetric:
        yield (*path, "algorithms"), "HMAC and public-key algorithms cannot share a provider"
    if wants_hmac and not isinstance(secret_env, str):
        yield (*path, "keys"), "HS256/384/512 need keys.secret_env (the secret stays out of files)"
    if isinstance(secret_env, str):
        if not wants_hmac:
            yield (*path, "keys", "secret_env"), "a secret only verifies HS256/384/512 tokens"
        secret = os.environ.get(secret_env, "")
        needed = max((MIN_HMAC_SECRET_BYTES.get(alg, 32) for alg in algorithms), default=32)
        if len(secret.encode()) < needed:
            yield (
                (*path, "keys", "secret_env"),
                f"environment variable {secret_env} must hold at least {needed} bytes for "
                f"{', '.join(sorted(a for a in algorithms if a in HMAC_ALGORITHMS))} "
                f"(it is {'unset' if not secret else 'shorter'})",
            )
    jwks_file = keys.get("jwks_file")
    if isinstance(jwks_file, str) and not (policy_dir / jwks_file).is_file():
        yield (*path, "keys", "jwks_file"), f"no such file: {policy_dir / jwks_file}"
    issuer = provider.get("issuer")
    if keys.get("oidc_discovery") and isinstance(issuer, str) and not issuer.startswith("http"):
        yield (*path, "issuer"), "OIDC discovery needs an http(s) issuer URL"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_api_keys(provider: Mapping[str, Any], path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    ids: set[str] = set()
    principals = provider.get("principals")
    for owner_index, owner in enumerate(principals if isinstance(principals, list) else []):
        keys = owner.get("keys") if isinstance(owner, dict) else None
        for key_index, key in enumerate(keys if isinstance(keys, list) else []):
            if not isinstance(key, dict):
                continue
            key_path: KeyPath = (*path, "principals", owner_index, "keys", key_index)
            if isinstance(key.get("hash"), str):
                try:
                    parse_hash(key["hash"])
                except ValueError as exc:
                    yield (*key_path, "hash"), str(exc)
            if isinstance(key.get("id"), str):
                if key["id"] in ids:
                    yield (*key_path, "id"), f"key id {key['id']!r} is used twice"
                ids.add(key["id"])


def _check_route_references(
    data: Mapping[str, Any], names: set[str]
) -> Iterator[tuple[KeyPath, str]]:
    blocks: list[tuple[KeyPath, Any]] = []
    defaults = data.get("defaults")
    if isinstance(defaults, dict):
        blocks.append((("defaults", "identity"), defaults.get("identity")))
    routes = data.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            blocks.append((("routes", index, "identity"), route.get("identity")))
    for path, block in blocks:
        if not isinstance(block, dict):
            continue
        if block and "identity" not in data and not block.get("anonymous", False):
            yield path, "requires credentials, but the policy has no identity: section"
        providers = block.get("providers")
        for index, name in enumerate(providers if isinstance(providers, list) else []):
            if isinstance(name, str) and name not in names:
                yield (*path, "providers", index), f"no identity provider is named {name!r}"


# ---- building (from a file that passed every check) --------------------------------------


def build_section(raw: Mapping[str, Any] | None, policy_dir: Path) -> IdentitySettings | None:
    if raw is None:
        return None
    return IdentitySettings(
        jwt=tuple(_jwt(provider, policy_dir) for provider in raw.get("jwt", [])),
        api_keys=tuple(_api_keys(provider) for provider in raw.get("api_keys", [])),
        mtls=tuple(_mtls(provider) for provider in raw.get("mtls", [])),
        headers=IdentityHeaders(**raw.get("headers", {})),
    )


def build_route(raw: Mapping[str, Any]) -> IdentityRoute:
    providers = raw.get("providers")
    return IdentityRoute(
        providers=frozenset(providers) if providers is not None else None,
        anonymous=raw.get("anonymous", False),
        anonymous_tier=raw.get("anonymous_tier", "anonymous"),
        require_scopes=frozenset(raw.get("require_scopes", ())),
        require_roles=frozenset(raw.get("require_roles", ())),
        require_mtls=raw.get("require_mtls", False),
        forward_credentials=raw.get("forward_credentials", False),
    )


def _jwt(raw: Mapping[str, Any], policy_dir: Path) -> JwtProvider:
    keys = raw["keys"]
    token = raw.get("token")
    secret_env = keys.get("secret_env")
    options = {
        name: raw[name]
        for name in (
            "refresh_interval_s",
            "min_refetch_interval_s",
            "fetch_timeout_s",
            "required_at_start",
            "leeway_s",
            "max_lifetime_s",
            "require_exp",
            "typ",
            "max_token_bytes",
        )
        if name in raw
    }
    return JwtProvider(
        name=raw["name"],
        issuer=raw["issuer"],
        audiences=tuple(raw["audiences"]),
        algorithms=frozenset(raw["algorithms"]),
        jwks_file=policy_dir / keys["jwks_file"] if "jwks_file" in keys else None,
        jwks_uri=keys.get("jwks_uri"),
        oidc_discovery=bool(keys.get("oidc_discovery", False)),
        hmac_secret=os.environ[secret_env].encode() if secret_env else None,
        token=_token_location(token) if token else TokenLocation(),
        claims=_claims(raw.get("claims", {})),
        **options,
    )


def _token_location(raw: Mapping[str, Any]) -> TokenLocation:
    if "cookie" in raw:
        return TokenLocation(header=None, scheme=None, cookie=raw["cookie"])
    header = raw.get("header", "authorization")
    default_scheme = "Bearer" if header == "authorization" else None
    return TokenLocation(header=header, scheme=raw.get("scheme", default_scheme))


def _claims(raw: Mapping[str, Any]) -> ClaimMapping:
    defaults = ClaimMapping()

    def rule(name: str) -> ClaimRule:
        value = raw.get(name)
        if value is None:
            rule_default: ClaimRule = getattr(defaults, name)
            return rule_default
        if isinstance(value, str):
            return ClaimRule(value, getattr(defaults, name).default)
        return ClaimRule(value["claim"], value.get("default"))

    return ClaimMapping(
        subject=rule("subject"),
        tenant=rule("tenant"),
        tier=rule("tier"),
        roles=rule("roles"),
        scopes=rule("scopes"),
    )


def _owner(raw: Mapping[str, Any]) -> KeyOwner:
    return KeyOwner(
        subject=raw.get("subject", raw.get("san", "")),
        tenant=raw.get("tenant", "default"),
        tier=raw.get("tier", "free"),
        roles=frozenset(raw.get("roles", ())),
        scopes=frozenset(raw.get("scopes", ())),
    )


def _api_keys(raw: Mapping[str, Any]) -> ApiKeyProvider:
    owners = tuple(_owner(entry) for entry in raw["principals"])
    keys = tuple(
        StoredKey(key_id=key["id"], digest=parse_hash(key["hash"]), owner=index)
        for index, entry in enumerate(raw["principals"])
        for key in entry["keys"]
    )
    return ApiKeyProvider(raw["name"], raw.get("header", "x-api-key"), owners, keys)


def _mtls(raw: Mapping[str, Any]) -> MtlsProvider:
    return MtlsProvider(
        raw["name"],
        tuple(MtlsIdentity(entry["san"], _owner(entry)) for entry in raw["principals"]),
    )
