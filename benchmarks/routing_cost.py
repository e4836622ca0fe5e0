"""What the routing layer costs per decision, in process: the demo's two providers, the
cheapest-within-target strategy, health looked up, a model-switch check — timed alone on a
prepared context, next to the whole pipeline for the same request (the baseline, measured
in the same run). Also what one access-log entry from Envoy costs to take in."""

from __future__ import annotations

import tempfile
from pathlib import Path

from envoy.data.accesslog.v3 import accesslog_pb2

from authz_service.feedback import FeedbackHub
from authz_service.layers.routing import RoutingLayer
from authz_service.policy import load_policy
from authz_service.server.access_log import observation
from benchmarks.layer_cost import chat_body, check_request, layer_us, per_call_us

POLICY = """
version: 1
routing:
  strategy: cheapest_within_target
  model_header: x-authz-model
  providers:
    - name: hosted
      cluster: mock_hosted
      models: { gpt-4o-mini: null, gpt-4o: null }
      price: { input_per_1k: 0.00015, output_per_1k: 0.0006 }
      tiers: [pro]
      latency_target_ms: 2000
    - name: selfhosted
      cluster: mock_selfhosted
      models: { gpt-4o-mini: llama-3-8b, llama-3-8b: null }
      price: { input_per_1k: 0.001, output_per_1k: 0.002 }
routes:
  - name: chat
    match: { path: { exact: /v1/chat/completions }, methods: [POST] }
    protocol: { content_types: [application/json], max_body_bytes: 262144 }
    routing: {}
"""


def access_log_entry() -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.common_properties.upstream_cluster = "mock_hosted"
    entry.common_properties.time_to_first_upstream_rx_byte.nanos = 42_000_000
    entry.response.response_code.value = 200
    return entry


def report() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "policy.yaml"
        file.write_text(POLICY)
        policy = load_policy(file)
    assert policy.routing is not None
    hub = FeedbackHub()
    layer = RoutingLayer(policy.routing, hub)
    hub.attach(layer.board)
    request = check_request("/v1/chat/completions", "application/json", chat_body())
    routing_us, pipeline_us = layer_us(policy, request, layer)
    entry = access_log_entry()

    def ingest() -> None:
        found = observation(entry)
        if found is not None:
            hub.observe(found)

    ingest_us = per_call_us(ingest)
    print("\nrouting layer (2 providers, cheapest within target), in process:")
    print(f"  routing decision:                 {routing_us:8.1f} µs")
    print(f"  baseline, whole pipeline:         {pipeline_us:8.1f} µs")
    print(f"  ratio routing / pipeline:         {routing_us / pipeline_us:8.2f}")
    print(f"  one access-log entry taken in:    {ingest_us:8.1f} µs")


if __name__ == "__main__":
    report()
