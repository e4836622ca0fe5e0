"""Layer 5, routing: the provider that serves each request, chosen by tier, model, price,
observed latency and health (fed back by Envoy's access-log stream) and the budget left,
told to Envoy by a request header its route table matches on.
"""

from authz_service.layers.routing.layer import RoutingLayer

__all__ = ["RoutingLayer"]
