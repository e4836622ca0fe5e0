"""authz-service: Envoy external authorization for AI inference endpoints.

A request flows one way: Envoy's ``CheckRequest`` → :class:`~authz_service.request_view.RequestView`
→ the layers, in the order :mod:`authz_service.pipeline` alone knows → one
:class:`~authz_service.decision.Decision` → ``CheckResponse``.
"""

__version__ = "0.1.0"
