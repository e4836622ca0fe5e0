"""The ``authz-service`` command: serve, check, validate, quota, api-key, dev-token.

Every option can also be given as an ``AUTHZ_*`` environment variable (``REDIS_URL``
too), which is how the Kubernetes sidecar is usually configured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf import json_format

from authz_service.devstack.idp import DEFAULT_AUDIENCE, mint_token
from authz_service.envoy_codec import request_view
from authz_service.layers.identity.api_keys import hash_key, new_key
from authz_service.observability.decision_log import DecisionLog
from authz_service.observability.logging import configure_logging
from authz_service.pipeline import Pipeline
from authz_service.policy import PolicyError, load_policy
from authz_service.server.app import ServeOptions, serve


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"AUTHZ_{name}", default)


def _address(value: str) -> str:
    """``HOST:PORT`` with a numeric port, checked before anything starts."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return value


def with_redis(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--redis-url",
        default=_env("REDIS_URL", os.environ.get("REDIS_URL")),
        help="quota store (AUTHZ_REDIS_URL or REDIS_URL); embedded if unset",
    )
    command.add_argument(
        "--redis-cluster",
        action="store_true",
        default=_env("REDIS_CLUSTER", "") in ("1", "true", "yes"),
        help="the URL names one node of a Redis Cluster (AUTHZ_REDIS_CLUSTER=1)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authz-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--config",
            type=Path,
            default=_env("CONFIG"),
            required=_env("CONFIG") is None,
            help="policy file (AUTHZ_CONFIG)",
        )
        command.add_argument(
            "--log-level",
            default=_env("LOG_LEVEL", "info"),
            choices=["debug", "info", "warning", "error"],
            help="log level (AUTHZ_LOG_LEVEL)",
        )

    serve_cmd = commands.add_parser("serve", help="run the ext_authz gRPC service")
    with_config(serve_cmd)
    serve_cmd.add_argument(
        "--listen",
        type=_address,
        default=_env("LISTEN", "127.0.0.1:9191"),
        help="gRPC address (AUTHZ_LISTEN)",
    )
    serve_cmd.add_argument(
        "--metrics-listen",
        type=_address,
        default=_env("METRICS_LISTEN", "127.0.0.1:9464"),
        help="Prometheus /metrics address (AUTHZ_METRICS_LISTEN)",
    )
    serve_cmd.add_argument(
        "--grace-period",
        type=float,
        default=_env("GRACE_PERIOD", "10"),
        help="seconds for in-flight checks on SIGTERM (AUTHZ_GRACE_PERIOD)",
    )
    with_redis(serve_cmd)
    serve_cmd.add_argument(
        "--record",
        type=Path,
        default=_env("RECORD"),
        help="append every CheckRequest as JSON to this file, for replay with "
        "`check` (contains tokens and bodies; debugging only)",
    )

    check_cmd = commands.add_parser(
        "check", help="decide CheckRequests (protobuf JSON, one per line on stdin)"
    )
    with_config(check_cmd)

    validate_cmd = commands.add_parser("validate", help="validate a policy file")
    with_config(validate_cmd)

    quota = commands.add_parser("quota", help="a principal's usage per limit, in the store")
    quota_commands = quota.add_subparsers(dest="quota_command", required=True)
    for name, text in (("show", "print usage and remaining per limit"), ("reset", "clear it")):
        quota_cmd = quota_commands.add_parser(name, help=text)
        with_config(quota_cmd)
        with_redis(quota_cmd)
        quota_cmd.add_argument("--user", required=True, help="the principal's subject")
        for option in ("tenant", "tier", "api-key", "model", "route", "ip"):
            quota_cmd.add_argument(f"--{option}", default="", help="for limits scoped by it")
        if name == "reset":
            quota_cmd.add_argument(
                "--limit", help="only this limit (also shared ones: tenant, model, global)"
            )

    api_key = commands.add_parser("api-key", help="make API keys and the hashes a policy stores")
    api_key_commands = api_key.add_subparsers(dest="api_key_command", required=True)
    api_key_commands.add_parser("new", help="print a new random key and its hash")
    api_key_commands.add_parser("hash", help="print the hash of the key read from stdin")

    token = commands.add_parser("dev-token", help="mint a JWT from the demo identity provider")
    token.add_argument(
        "--keys",
        type=Path,
        default=Path(_env("IDP_KEYS", ".run/idp") or ""),
        help="the demo provider's key directory (AUTHZ_IDP_KEYS)",
    )
    token.add_argument("--issuer", default=_env("IDP_ISSUER", "http://127.0.0.1:18080"))
    token.add_argument("--audience", action="append", help="repeatable (default authz-demo)")
    token.add_argument("--subject", default="demo-user")
    token.add_argument("--tenant", default="demo")
    token.add_argument("--tier", default="free")
    token.add_argument("--role", action="append", default=[], help="repeatable")
    token.add_argument("--scope", action="append", default=[], help="repeatable")
    token.add_argument("--lifetime", type=int, default=3600, help="seconds")
    token.add_argument("--expired", action="store_true", help="a token that expired already")
    token.add_argument(
        "--not-before", type=int, default=0, help="seconds until the token becomes valid (nbf)"
    )
    token.add_argument("--algorithm", default="RS256", choices=["RS256", "ES256"])

    detector = commands.add_parser(
        "eval-detector",
        help="run the prompt-injection detector over a labelled JSONL and print its figures",
    )
    detector.add_argument(
        "--data",
        type=Path,
        required=True,
        help='JSONL with {"text": ..., "label": 0|1, "lang": ...} per line',
    )
    detector.add_argument(
        "--threshold", type=float, default=None, help="score from which a text counts as flagged"
    )
    detector.add_argument(
        "--detector",
        action="append",
        choices=["patterns", "classifier"],
        help="repeatable (default: both)",
    )
    detector.add_argument(
        "--passes",
        type=_positive_int,
        default=None,
        help="timed passes over the data; CPU time is their median (default: 5)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args.config)
    if args.command == "api-key":
        return _api_key(args.api_key_command)
    if args.command == "dev-token":
        return _dev_token(args)
    if args.command == "eval-detector":
        return _eval_detector(args)
    if args.command == "quota":
        return _quota(args)
    if args.command == "check":
        configure_logging(sys.stderr.buffer, args.log_level)
        return _check(args.config)
    configure_logging(sys.stdout.buffer, args.log_level)
    options = ServeOptions(
        config=args.config,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        grace_period_s=args.grace_period,
        redis_url=args.redis_url or None,
        redis_cluster=args.redis_cluster,
        record=args.record,
    )
    try:
        asyncio.run(serve(options))
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"authz-service: {exc}", file=sys.stderr)
        return 2
    return 0


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return number


def _eval_detector(args: argparse.Namespace) -> int:
    # Imported here: loading the detector's model is for this command, not every command.
    from authz_service.layers.semantics.injection.evaluate import (
        DEFAULT_PASSES,
        DEFAULT_THRESHOLD,
        run_eval,
    )

    detectors = frozenset(args.detector or ("patterns", "classifier"))
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    return run_eval(args.data, threshold, detectors, args.passes or DEFAULT_PASSES)


def _quota(args: argparse.Namespace) -> int:
    from authz_service.layers.cost import operator  # the store's client: this command only
    from authz_service.layers.cost.backend import open_backend
    from authz_service.layers.cost.store.base import StoreError

    try:
        policy = load_policy(args.config)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    section = policy.cost
    if section is None:
        print(f"authz-service quota: {args.config} declares no limits", file=sys.stderr)
        return 2
    if not args.redis_url:
        print("authz-service quota: no --redis-url / REDIS_URL (the embedded store lives "
              "inside each serving process)", file=sys.stderr)  # fmt: skip
        return 2
    who = operator.Who(
        args.user, args.tenant, args.tier, args.api_key, args.model, args.route, args.ip
    )
    backend = open_backend(args.redis_url, args.redis_cluster)

    async def run() -> dict[str, object]:
        try:
            if args.quota_command == "show":
                return await operator.show(backend.store, section, who)
            return await operator.reset(backend.store, section, who, args.limit)
        finally:
            await backend.store.close()

    try:
        report = asyncio.run(run())
    except operator.OperatorError as exc:
        print(f"authz-service quota: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"authz-service quota: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _validate(config: Path) -> int:
    try:
        policy = load_policy(config)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in {config}", file=sys.stderr)
        return 1
    print(f"{config}: OK ({len(policy.routes)} routes)")
    return 0


def _api_key(command: str) -> int:
    if command == "new":
        key = new_key()
        print(f"key:  {key}\nhash: {hash_key(key)}")
        return 0
    key = sys.stdin.readline().strip()
    if not key:
        print("authz-service api-key hash: no key on stdin", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def _dev_token(args: argparse.Namespace) -> int:
    if not (args.keys / "signing-keys.json").exists():
        print(
            f"authz-service dev-token: no demo keys in {args.keys} (start `make run` first)",
            file=sys.stderr,
        )
        return 2
    print(
        mint_token(
            args.keys,
            issuer=args.issuer,
            audience=args.audience or DEFAULT_AUDIENCE,
            subject=args.subject,
            tenant=args.tenant,
            tier=args.tier,
            roles=args.role,
            scopes=args.scope,
            lifetime_s=args.lifetime,
            expired=args.expired,
            not_before_s=args.not_before,
            algorithm=args.algorithm,
        )
    )
    return 0


def _check(config: Path) -> int:
    """Run each request through the very pipeline ``serve`` builds; one JSON line each."""
    try:
        policy = load_policy(config)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 2
    decision_log = DecisionLog(sys.stderr.buffer)
    try:
        return asyncio.run(_check_lines(Pipeline(policy, (decision_log,))))
    finally:
        decision_log.flush()


async def _check_lines(pipeline: Pipeline) -> int:
    await pipeline.start()
    try:
        return await _decide_lines(pipeline)
    finally:
        await pipeline.stop()


async def _decide_lines(pipeline: Pipeline) -> int:
    failures = 0
    out = sys.stdout.buffer
    for number, line in enumerate(sys.stdin.buffer, start=1):
        if not line.strip():
            continue
        try:
            request = json_format.Parse(line, CheckRequest())
        except json_format.ParseError as exc:
            failures += 1
            out.write(orjson.dumps({"line": number, "error": f"not a CheckRequest: {exc}"}) + b"\n")
            continue
        decision = await pipeline.decide(request_view(request))
        out.write(orjson.dumps(decision.summary()) + b"\n")
        out.flush()
    return 1 if failures else 0
