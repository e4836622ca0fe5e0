"""The contract between the pipeline and its layers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from authz_service.decision import Denial
    from authz_service.layers.identity.principal import Principal
    from authz_service.policy.model import Route
    from authz_service.request_view import RequestView

LayerName = Literal["protocol", "identity", "syntax", "semantics", "cost", "routing"]
"""Every layer of DESIGN.md, in pipeline order. Those not built yet have no implementation."""


class _NoBody:
    """Marks that no JSON body was parsed (distinct from a JSON ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_JSON_BODY"


NO_JSON_BODY: Any = _NoBody()


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """What an LLM request will cost in tokens, counted once per request by whichever layer
    needs it first (a Rego policy that reads ``input.token_estimate``, else the cost layer)."""

    model: str
    """The requested model ("" when the body names none)."""
    prompt: int
    output: int
    """The most the request may generate (``max_tokens`` or the model's default, capped)."""

    @property
    def total(self) -> int:
        return self.prompt + self.output


@dataclass(slots=True)
class Context:
    """What the layers learn about one request, filled in pipeline order.

    The view is read-only; each layer adds what it found (the parsed body, later the
    principal, the token estimate, the reservation) or what the upstream should get.
    """

    view: RequestView
    decision_id: str
    route: Route | None
    """The policy route that matched, or ``None`` (the protocol layer denies then)."""
    methods_on_path: frozenset[str] = frozenset()
    """Methods that other routes accept on this path: the ``Allow`` header of a 405."""
    path_params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    body: bytes = b""
    """The body with any ``Content-Encoding`` undone (set by the protocol layer); later
    layers read this, never ``view.body``, which is what the client sent on the wire."""
    json_body: Any = NO_JSON_BODY
    """The body parsed once by the protocol layer on JSON routes."""
    fields: Any = NO_JSON_BODY
    """The body as policies read it (rules' ``body/…``, Rego's ``input.parsed_body``,
    injection pointers): the parsed JSON, or the fields of a form or multipart body as an
    object once the syntax layer has parsed them (typed as an OpenAPI document declares
    them); ``NO_JSON_BODY`` otherwise."""
    principal: Principal | None = None
    """Who is asking, once the identity layer has run."""
    token_estimate: TokenEstimate | None = None
    """The request's tokens (LLM routes), for Rego, the cost layer and routing's prices."""
    budget_left: float | None = None
    """Share of the tightest token budget left after this request (cost layer), if any."""
    upstream_headers: dict[str, str] = field(default_factory=dict)
    headers_to_remove: list[str] = field(default_factory=list)
    response_headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    """Flat dynamic metadata for Envoy (access log, later filters) and the decision log."""
    undo: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    """What to take back if a later layer denies (e.g. release a reservation), so a request
    that is refused is never charged."""


class Layer(Protocol):
    """One layer of defense: reads the context, adds to it, or denies."""

    name: LayerName

    async def check(self, ctx: Context) -> Denial | None:
        """Return a denial, or ``None`` to let the next layer look."""
        ...


@runtime_checkable
class Lifecycle(Protocol):
    """A layer with background work (e.g. fetching keys): started before the service
    reports SERVING, stopped on shutdown or when a reload replaces it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def ready(self) -> bool: ...
