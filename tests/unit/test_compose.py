"""docker-compose.yml is valid offline and only names commands the package has."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.cli import COMMANDS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_validates_with_docker_compose() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose (Debian 1.29) not installed; `make test` installs it")
    result = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_service_runs_a_real_command_and_binds_loopback() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    expected = {"kafka", "clickhouse", "processor", "planner", "console", "demo-trainer"}
    assert expected <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        if image.startswith("shardsense"):
            assert svc["command"][0] in COMMANDS, f"{name}: {svc['command']}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    for name in ("kafka", "clickhouse", "console"):
        assert "healthcheck" in services[name], name
    assert set(spec["volumes"]) >= {"kafka-data", "clickhouse-data"}
    dockerfile = ROOT / services["migrate"]["build"]["dockerfile"]
    assert dockerfile.exists()


def test_the_image_copies_every_package_the_project_installs() -> None:
    """The Dockerfile must follow the layout: a package it misses breaks a command in the image."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {line.split()[1] for line in (ROOT / "infra" / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ") and (ROOT / line.split()[1]).is_dir()}
    assert packages <= copied, f"infra/Dockerfile does not COPY {sorted(packages - copied)}"
