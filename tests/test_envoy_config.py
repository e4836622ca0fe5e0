"""Every Envoy config in the repo is one Envoy accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from authz_service.devstack.certs import ensure_dev_certificates
from authz_service.devstack.stack import Ports, envoy_binary, render_envoy_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "envoy").glob("*.yaml"))


def test_there_is_a_config() -> None:
    assert REPO / "envoy" / "envoy.yaml" in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_envoy_validates(config: Path, tmp_path: Path) -> None:
    ensure_dev_certificates(tmp_path / "certs")
    rendered = tmp_path / config.name
    rendered.write_text(yaml.safe_dump(render_envoy_config(config, Ports(), tmp_path)))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(rendered), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_rendering_maps_every_demo_port(tmp_path: Path) -> None:
    ports = Ports(1, 2, 3, 4, 5, 6, 7)
    text = yaml.safe_dump(render_envoy_config(REPO / "envoy" / "envoy.yaml", ports, tmp_path))
    for demo_port in (10000, 10443, 9901, 9191, 18080, 18081):
        assert f"port_value: {demo_port}\n" not in text
    assert ".run/" not in text
