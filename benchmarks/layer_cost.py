"""What the syntax and semantic layers cost per request, in process. Syntax: a chat body
(built-in OpenAI schema and tier limits) and 1 MB images (raw PNG, raw JPEG, base64 in
JSON). Semantics: the demo's rules, its Rego policy, and injection detection on the same
chat body.

The layer is timed alone, on the context the protocol layer prepared, next to the whole
pipeline for the same request. For images the baseline, measured in the same run, is
what the classifier behind us does first: decode the image with Pillow.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from PIL import Image

from authz_service.decision import Denial
from authz_service.devstack.stack import DEMO_POLICY
from authz_service.envoy_codec import request_view
from authz_service.layers.base import Context, Layer
from authz_service.layers.cost.estimator import TokenEstimator
from authz_service.layers.identity import Principal
from authz_service.layers.protocol import ProtocolLayer
from authz_service.layers.semantics import SemanticsLayer
from authz_service.layers.semantics.injection import InjectionDetector, TextSegment
from authz_service.layers.syntax import SyntaxLayer
from authz_service.pipeline import Pipeline
from authz_service.policy import Policy, load_policy
from authz_service.policy.loader import route_table

T = TypeVar("T")

POLICY = """
version: 1
semantics:
  rego:
    tenants: { modules: [rego/tenants.rego], data: [rego/tenants.json] }
routes:
  - name: chat
    match: { path: { exact: /v1/chat/completions }, methods: [POST] }
    protocol: { content_types: [application/json], max_body_bytes: 262144 }
    syntax:
      llm:
        api: openai.chat_completions
        limits:
          "*": { max_messages: 64, max_total_chars: 100000, max_output_tokens: 4096 }
  - name: rules
    match: { path: { exact: /rules }, methods: [POST] }
    semantics:
      rules:
        - name: model-for-tier
          unless:
            any:
              - { body/model: { in: [gpt-4o-mini, llama-3-8b] } }
              - { body/model: gpt-4o, principal.tier: pro }
        - { name: one-choice, when: { body/n: { gt: 1 }, principal.tier: { not_in: [pro] } } }
        - { name: no-tools, when: { body/tools: { present: true }, principal.tier: free } }
        - { name: user-expected, unless: { body/user: { present: true } }, mode: dry_run }
  - name: rego
    match: { path: { exact: /rego }, methods: [POST] }
    semantics: { rego: tenants }
  - name: injection
    match: { path: { exact: /injection }, methods: [POST] }
    semantics: { injection: { api: openai.chat_completions, roles: [user, tool] } }
  - name: classify
    match: { path: { exact: /v1/classify }, methods: [POST] }
    protocol: { content_types: [application/json, image/*], max_body_bytes: 4194304 }
    syntax:
      image: { json_pointer: /image, max_width: 4096, max_height: 4096, max_pixels: 16777216 }
"""


def chat_body() -> bytes:
    messages = [
        {"role": "system", "content": "You are a helpful assistant for a travel agency. " * 6},
        {"role": "user", "content": "Plan a three day trip to Lisbon with museums. " * 20},
    ]
    body = {"model": "gpt-4o-mini", "max_tokens": 256, "temperature": 0.2, "messages": messages}
    return json.dumps(body).encode()


def noisy_image(kind: str, target_bytes: int) -> bytes:
    """An image of random pixels grown until its file is about ``target_bytes``."""
    rng = random.Random(7)  # noqa: S311 - reproducible pixels, not secrets
    side = 256
    while True:
        pixels = bytes(rng.getrandbits(8) for _ in range(side * side * 3))
        out = io.BytesIO()
        Image.frombytes("RGB", (side, side), pixels).save(out, format=kind, quality=95)
        if out.tell() >= target_bytes:
            return out.getvalue()
        side = int(side * 1.3)


def check_request(path: str, content_type: str, body: bytes) -> CheckRequest:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "POST", path, "api"
    http.headers.update({"content-type": content_type, "content-length": str(len(body))})
    http.raw_body = body
    return request


def per_call_us(call: Callable[[], object], seconds: float = 1.0) -> float:
    """Mean µs per call, over at least ``seconds`` (best of three batches)."""
    rounds = 1
    while True:
        started = time.perf_counter()
        for _ in range(rounds):
            call()
        elapsed = time.perf_counter() - started
        if elapsed > seconds / 3:
            break
        rounds *= 2
    best = elapsed
    for _ in range(2):
        started = time.perf_counter()
        for _ in range(rounds):
            call()
        best = min(best, time.perf_counter() - started)
    return best / rounds * 1e6


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits (a layer's check) without an event loop's cost."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    raise RuntimeError("the coroutine waited")


PRINCIPAL = Principal(
    subject="alice",
    tenant="demo",
    tier="pro",
    roles=frozenset({"user"}),
    scopes=frozenset(),
    method="jwt",
    provider="bench",
)


def check_fresh(layer: Layer, ctx: Context) -> Denial | None:
    """``layer``'s check as on a fresh request: layers add to the context, so reset it."""
    ctx.metadata.clear()
    return run_now(layer.check(ctx))


def layer_us(policy: Policy, request: CheckRequest, layer: Layer) -> tuple[float, float]:
    """(``layer`` µs, whole pipeline µs) for ``request``: the layer is timed alone on the
    context the protocol layer prepared (body decoded, JSON parsed), as a pro principal."""
    view = request_view(request)
    resolution = route_table(policy).resolve(view.host, view.method, view.path)
    ctx = Context(view=view, decision_id="bench", route=resolution.route, principal=PRINCIPAL)
    assert run_now(ProtocolLayer(policy.unmatched).check(ctx)) is None
    denial = run_now(layer.check(ctx))
    assert denial is None, denial
    pipeline = Pipeline(policy)
    loop = asyncio.new_event_loop()
    try:
        return (
            per_call_us(lambda: check_fresh(layer, ctx)),
            per_call_us(lambda: loop.run_until_complete(pipeline.decide(view))),
        )
    finally:
        loop.close()


def load_bench_policy() -> Policy:
    """The policy above, next to a copy of the demo's Rego module and data."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(DEMO_POLICY.parent / "rego", Path(tmp) / "rego")
        file = Path(tmp) / "policy.yaml"
        file.write_text(POLICY)
        return load_policy(file)


def measure_semantics(policy: Policy) -> list[tuple[str, float, float]]:
    """(what, semantic layer µs, pipeline µs) for the chat body on each semantic route."""
    layer = SemanticsLayer(TokenEstimator(policy.cost))
    body = chat_body()
    results = [
        (
            f"{what} ({len(body)} B chat body)",
            *layer_us(policy, check_request(path, "application/json", body), layer),
        )
        for what, path in (
            ("4 rules, one in dry-run", "/rules"),
            ("Rego: the demo tenants policy", "/rego"),
            ("injection, conversation seen before", "/injection"),
        )
    ]
    # A text never seen before: the detector alone, each call on a different message.
    message = json.loads(body)["messages"][1]["content"]
    numbers = itertools.count()
    detector = InjectionDetector()
    new_text_us = per_call_us(
        lambda: detector.scan([TextSegment("/m", "user", f"{message} #{next(numbers)}")])
    )
    results.append((f"injection, a new {len(message)} B message", new_text_us, 0.0))
    return results


def measure(policy: Policy) -> list[tuple[str, float, float]]:
    """(what, syntax layer µs, pipeline µs) per request, then the baseline for images:
    what decoding them costs (the classifier's first step), as (what, µs, 0)."""
    png, jpeg = noisy_image("PNG", 1_000_000), noisy_image("JPEG", 1_000_000)
    requests = {
        f"chat body ({len(chat_body())} B)": check_request(
            "/v1/chat/completions", "application/json", chat_body()
        ),
        f"raw PNG ({len(png) // 1000} KB)": check_request("/v1/classify", "image/png", png),
        f"raw JPEG ({len(jpeg) // 1000} KB)": check_request("/v1/classify", "image/jpeg", jpeg),
        f"JPEG as base64 in JSON ({len(jpeg) * 4 // 3000} KB)": check_request(
            "/v1/classify",
            "application/json",
            json.dumps({"image": base64.b64encode(jpeg).decode()}).encode(),
        ),
    }
    syntax = SyntaxLayer()
    results = [(name, *layer_us(policy, request, syntax)) for name, request in requests.items()]
    for name, data in (("PNG", png), ("JPEG", jpeg)):
        decode_us = per_call_us(lambda data=data: Image.open(io.BytesIO(data)).load())  # type: ignore[misc]
        results.append((f"baseline: Pillow decoding the {name}", decode_us, 0.0))
    return results


def report() -> None:
    policy = load_bench_policy()
    print("\nsemantic layer, in process, per request")
    print(f"  {'check':<44}{'semantic layer µs':>18}{'whole pipeline µs':>19}")
    for name, layer, pipeline in measure_semantics(policy):
        print(f"  {name:<44}{layer:>18.1f}" + (f"{pipeline:>19.1f}" if pipeline else ""))
    print("\nsyntax layer, in process, per request")
    print(f"  {'request':<44}{'syntax layer µs':>16}{'whole pipeline µs':>19}")
    results = measure(policy)
    for name, layer, pipeline in results:
        print(f"  {name:<44}{layer:>16.1f}{pipeline:>19.1f}" if pipeline else "", end="")
        print("" if pipeline else f"  {name:<44}{layer:>16.1f}", end="\n")
    checks = {name.split(" (")[0]: layer for name, layer, pipeline in results if pipeline}
    decodes = {name.rsplit(" ", 1)[1]: layer for name, layer, pipeline in results if not pipeline}
    for kind in ("PNG", "JPEG"):
        ratio = decodes[kind] / checks[f"raw {kind}"]
        print(f"  checking a 1 MB {kind} costs 1/{ratio:.0f} of decoding it")


if __name__ == "__main__":
    report()
