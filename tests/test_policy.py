"""Policy files: every problem at once, with file, line and key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from authz_service.policy import PolicyError, load_policy
from tests.helpers import write_policy

REPO = Path(__file__).resolve().parents[1]

BROKEN = """\
version: 1
settings:
  decision_timeout_ms: fast
  colour: blue
routes:
  - name: chat
    match: { path: { exact: /v1/chat, prefix: /x }, methods: [FETCH] }
    protocol:
      max_body_bytes: -1
      bodyy: required
  - name: chat
    match: { path: { template: "/v1/{a}/{a}" } }
unmatched: { route: nope }
"""


def test_every_problem_is_listed_with_its_line_and_key(tmp_path: Path) -> None:
    file = write_policy(tmp_path, BROKEN)
    with pytest.raises(PolicyError) as caught:
        load_policy(file)
    found = {(problem.line, problem.path) for problem in caught.value.problems}
    assert found == {
        (3, ("settings", "decision_timeout_ms")),
        (4, ("settings", "colour")),
        (7, ("routes", 0, "match", "methods", 0)),
        (7, ("routes", 0, "match", "path")),
        (9, ("routes", 0, "protocol", "max_body_bytes")),
        (10, ("routes", 0, "protocol", "bodyy")),
        (11, ("routes", 1, "name")),
        (12, ("routes", 1, "match", "path", "template")),
        (13, ("unmatched", "route")),
    }
    text = str(caught.value)
    assert f"{file}:10: routes[0].protocol.bodyy: unknown key 'bodyy'" in text
    assert "route name 'chat' is used twice" in text


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    file = write_policy(tmp_path, "version: 1\nroutes: [\n  - {name: a\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(file)
    assert caught.value.problems[0].line is not None
    assert "not valid YAML" in str(caught.value)


def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    file = write_policy(tmp_path, "version: 1\nroutes: []\nroutes: []\n")
    with pytest.raises(PolicyError, match=r":3: routes: duplicate key"):
        load_policy(file)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file"):
        load_policy(tmp_path / "absent.yaml")
    with pytest.raises(PolicyError, match="is not of type 'object'"):
        load_policy(write_policy(tmp_path, ""))


def test_defaults_are_merged_under_route_settings(tmp_path: Path) -> None:
    policy = load_policy(
        write_policy(
            tmp_path,
            """
            version: 1
            defaults: { protocol: { max_body_bytes: 10, body: required } }
            routes:
              - { name: a, match: { path: { prefix: / } }, protocol: { max_body_bytes: 99 } }
            """,
        )
    )
    settings = policy.routes[0].protocol
    assert (settings.max_body_bytes, settings.body) == (99, "required")


@pytest.mark.parametrize("file", sorted((REPO / "deploy" / "policies").glob("*.yaml")))
def test_shipped_policies_are_valid(file: Path) -> None:
    load_policy(file)


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "authz_service",
            "validate",
            "--config",
            str(REPO / "deploy" / "policies" / "demo.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "authz_service",
            "validate",
            "--config",
            str(write_policy(tmp_path, BROKEN)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "9 problem(s)" in bad.stderr
    assert bad.stderr.count("policy.yaml:") == 9
