"""Whatever arrives, the syntax layer answers with a decision, never an internal error:
the malformed-payload corpus, mutated at random (fixed seed), through the real pipeline
with the situation-1 policy (the classifier's OpenAPI document and image checks)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from authz_service.devstack.run import DEMO_API_KEY
from authz_service.envoy_codec import request_view
from authz_service.pipeline import Pipeline
from authz_service.policy import load_policy
from tests.helpers import check_request
from tests.payloads import JPEG, PNG, b64, classifier_corpus, image_bytes, multipart

POLICY = Path(__file__).parents[1] / "deploy" / "policies" / "situation-1-classifier.yaml"
PATHS = ["/v1/classify"] * 5 + ["/v1/classify?top_k=3", "/v1/classify?top_k=%ff", "/v1/classify?x"]


def seeds() -> list[tuple[str, bytes]]:
    valid = [
        ("image/png", PNG),
        ("image/jpeg", JPEG),
        ("image/webp", image_bytes("WEBP")),
        ("application/json", b'{"image": "' + b64(PNG).encode() + b'", "top_k": 2}'),
        multipart([("image", "a.png", "image/png", PNG), ("top_k", None, "text/plain", b"2")]),
    ]
    return valid + [(bad.content_type, bad.body) for bad in classifier_corpus()]


def mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        action = rng.randrange(4)
        position = rng.randrange(len(data) + 1)
        if action == 0 and data:
            data[position % len(data)] = rng.randrange(256)
        elif action == 1:
            del data[position : position + rng.randint(1, 64)]
        elif action == 2:
            data[position:position] = rng.randbytes(rng.randint(1, 16))
        else:
            data = data[:position]
    return bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_payloads_never_cause_an_internal_error(seed: int) -> None:
    rng = random.Random(seed)
    pipeline = Pipeline(load_policy(POLICY))
    cases = seeds()
    statuses: dict[int, int] = {}

    async def run_all() -> None:
        for _ in range(600):
            content_type, body = rng.choice(cases)
            request = check_request(
                "POST",
                rng.choice(PATHS),
                headers={"content-type": content_type, "x-api-key": DEMO_API_KEY},
                body=mutate(rng, body),
            )
            decision = await pipeline.decide(request_view(request))
            assert decision.status < 500, (decision.reason, decision.message)
            statuses[decision.status] = statuses.get(decision.status, 0) + 1

    asyncio.run(run_all())
    assert len(statuses) >= 4, statuses  # the mutations reach many different checks
