"""Prometheus metrics, exported as text on an asyncio HTTP endpoint.

A tiny registry rather than ``prometheus_client``: a few metric families, no locks needed
(one event loop per process), and nothing to import on the request path.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import Callable

from authz_service.decision import Decision
from authz_service.request_view import RequestView

_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


class Metrics:
    def __init__(self) -> None:
        self.decisions: Counter[tuple[str, str, str, str]] = Counter()
        self.dry_run_denials: Counter[tuple[str, str]] = Counter()
        self.flags: Counter[tuple[str, str]] = Counter()
        self.quota_decisions: Counter[str] = Counter()
        self.provider_choices: Counter[tuple[str, str, str]] = Counter()
        self.readings: dict[str, tuple[str, str, Callable[[], float]]] = {}
        """Values read when scraped: name -> (type, help, read)."""
        self.reserved_tokens: Counter[str] = Counter()
        self._bucket_counts = [0] * (len(_BUCKETS_S) + 1)
        self._latency_sum_s = 0.0

    def observe(self, view: RequestView, decision: Decision, latency_ns: int) -> None:
        key = (decision.route or "", decision.layer or "", decision.reason, str(decision.status))
        self.decisions[key] += 1
        for reason in _listed(decision.metadata.get("would_deny")):
            self.dry_run_denials[(decision.route or "", reason)] += 1
        for reason in _listed(decision.metadata.get("flagged")):
            self.flags[(decision.route or "", reason)] += 1
        store = decision.metadata.get("quota_store")
        if store is not None:
            self.quota_decisions[store] += 1
            self.reserved_tokens[decision.route or ""] += int(
                decision.metadata.get("reserved_tokens", 0)
            )
        provider = decision.metadata.get("provider")
        if provider is not None:
            reason = decision.metadata.get("provider_reason", "")
            self.provider_choices[(decision.route or "", provider, reason)] += 1
        seconds = latency_ns / 1e9
        self._bucket_counts[bisect.bisect_left(_BUCKETS_S, seconds)] += 1
        self._latency_sum_s += seconds

    def render(self) -> str:
        lines = [
            "# HELP authz_decisions_total Decisions by route, deciding layer, reason and status.",
            "# TYPE authz_decisions_total counter",
        ]
        for (route, layer, reason, status), count in sorted(self.decisions.items()):
            labels = f'route="{route}",layer="{layer}",reason="{reason}",status="{status}"'
            lines.append(f"authz_decisions_total{{{labels}}} {count}")
        for name, help_text, counter in (
            (
                "authz_dry_run_denials_total",
                "Denials a check in dry-run would have made (the request was allowed).",
                self.dry_run_denials,
            ),
            (
                "authz_flags_total",
                "Requests a check flagged to the upstream and allowed.",
                self.flags,
            ),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            for (route, reason), count in sorted(counter.items()):
                lines.append(f'{name}{{route="{route}",reason="{reason}"}} {count}')
        lines += [
            "# HELP authz_quota_decisions_total Requests the cost layer charged, by where the "
            "quota was kept: redis, redis-cluster, embedded, fallback (store down, local "
            "limits) or unavailable (store down, denied).",
            "# TYPE authz_quota_decisions_total counter",
            *(
                f'authz_quota_decisions_total{{store="{store}"}} {count}'
                for store, count in sorted(self.quota_decisions.items())
            ),
            "# HELP authz_reserved_tokens_total Tokens reserved for admitted requests.",
            "# TYPE authz_reserved_tokens_total counter",
            *(
                f'authz_reserved_tokens_total{{route="{route}"}} {count}'
                for route, count in sorted(self.reserved_tokens.items())
            ),
            "# HELP authz_provider_choices_total Requests routed, by provider and why.",
            "# TYPE authz_provider_choices_total counter",
            *(
                f'authz_provider_choices_total{{route="{route}",provider="{provider}",'
                f'reason="{reason}"}} {count}'
                for (route, provider, reason), count in sorted(self.provider_choices.items())
            ),
            *(
                line
                for name, (kind, help_text, read) in sorted(self.readings.items())
                for line in _reading(name, kind, help_text, read())
            ),
            "# HELP authz_decision_duration_seconds Time from CheckRequest to Decision.",
            "# TYPE authz_decision_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip((*_BUCKETS_S, float("inf")), self._bucket_counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'authz_decision_duration_seconds_bucket{{le="{le}"}} {cumulative}')
        lines.append(f"authz_decision_duration_seconds_sum {self._latency_sum_s}")
        lines.append(f"authz_decision_duration_seconds_count {cumulative}")
        return "\n".join(lines) + "\n"


def _reading(name: str, kind: str, help_text: str, value: float) -> tuple[str, str, str]:
    return f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"


def _listed(value: str | None) -> list[str]:
    return value.split(",") if value else []


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    """``GET /metrics`` on ``host:port``; anything else is a 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b""):
                pass
            parts = request_line.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                status, body = "200 OK", metrics.render().encode()
            else:
                status, body = "404 Not Found", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
