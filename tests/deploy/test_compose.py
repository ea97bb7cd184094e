"""docker-compose.yml validated by the real docker-compose (`config` needs no engine), on every profile and
with the host-network override the tests use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY, REPO, require_tool, run

COMPOSE = REPO / "docker-compose.yml"
HOSTNET = DEPLOY / "compose.hostnet.yml"
HINT = "install Debian's docker-compose package (deploy/ci-setup.sh)"
PROFILES = sorted({p for service in yaml.safe_load(COMPOSE.read_text())["services"].values()
                   for p in service.get("profiles", [])})


def compose_config(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    binary = require_tool("docker-compose", HINT)
    # Only the variables under test: the caller's environment must not change what is validated.
    clean = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG"}}
    proc = run([binary, "--project-directory", str(REPO), *args, "config"], env={**clean, **(env or {})},
               cwd=REPO)
    return dict(yaml.safe_load(proc.stdout))


def test_profiles_are_declared() -> None:
    assert PROFILES == ["gpu"], PROFILES


def test_compose_config_default() -> None:
    config = compose_config("-f", str(COMPOSE))
    services = config["services"]
    assert {"nnserve", "prometheus", "grafana"} <= set(services)
    nnserve = services["nnserve"]
    assert nnserve["build"]["dockerfile"] == "deploy/Dockerfile"
    assert nnserve["build"]["args"]["VARIANT"] == "cpu"
    assert nnserve["healthcheck"]["test"] == ["CMD", "python3", "/usr/local/bin/nnserve-healthcheck"]
    assert nnserve["restart"] == "unless-stopped"
    # The server drains for up to 30 s (NNSERVE_DRAIN_TIMEOUT_S) after SIGTERM; SIGKILL must come later.
    assert int(nnserve["stop_grace_period"].rstrip("s")) > 30
    limits = nnserve["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and limits["memory"]
    assert any(v.endswith(":/models:ro") for v in nnserve["volumes"]), nnserve["volumes"]
    assert nnserve["environment"]["NNSERVE_REPOSITORY"] == "/models"
    assert nnserve["environment"]["NNSERVE_PROVIDERS"] == "cpu"
    prometheus = services["prometheus"]
    assert any(v.endswith(":/etc/prometheus:ro") and "deploy/prometheus" in v for v in prometheus["volumes"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert [p["published"] if isinstance(p, dict) else p for p in services["grafana"]["ports"]]


def test_compose_config_every_profile() -> None:
    for profile in PROFILES:
        config = compose_config("--profile", profile, "-f", str(COMPOSE))
        assert "nnserve-gpu" in config["services"]
    gpu = compose_config("--profile", "gpu", "-f", str(COMPOSE))["services"]["nnserve-gpu"]
    assert gpu["build"]["args"]["VARIANT"] == "cuda"
    assert gpu["environment"]["NNSERVE_PROVIDERS"] == "cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1


def test_ports_and_images_are_overridable_by_env() -> None:
    env = {"NNSERVE_HOST_PORT": "18000", "PROMETHEUS_HOST_PORT": "19090", "GRAFANA_HOST_PORT": "13000",
           "NNSERVE_IMAGE": "registry.example/nnserve:1", "PROMETHEUS_IMAGE": "mirror/prometheus:x",
           "GRAFANA_IMAGE": "mirror/grafana:y", "NNSERVE_BASE_IMAGE": "nnserve-base:bookworm",
           "BIND_ADDRESS": "0.0.0.0"}
    services = compose_config("-f", str(COMPOSE), env=env)["services"]

    def published(service: dict[str, Any]) -> set[str]:
        return {str(p) if not isinstance(p, dict) else f"{p.get('host_ip')}:{p['published']}:{p['target']}"
                for p in service["ports"]}

    assert any("0.0.0.0:18000:8000" in p for p in published(services["nnserve"])), services["nnserve"]
    assert any(":8001:8001" in p for p in published(services["nnserve"])), "the gRPC port is published"
    assert services["nnserve"]["environment"]["NNSERVE_GRPC_PORT"] == "8001"
    assert any("19090:9090" in p for p in published(services["prometheus"]))
    assert any("13000:3000" in p for p in published(services["grafana"]))
    assert services["nnserve"]["image"] == "registry.example/nnserve:1"
    assert services["prometheus"]["image"] == "mirror/prometheus:x"
    assert services["grafana"]["image"] == "mirror/grafana:y"
    assert services["nnserve"]["build"]["args"]["BASE"] == "nnserve-base:bookworm"


def test_host_network_override() -> None:
    """The override the tests need: host networking everywhere, no bridge network, builds without network."""
    for profile_args in ([], ["--profile", "gpu"]):
        config = compose_config(*profile_args, "-f", str(COMPOSE), "-f", str(HOSTNET))
        for name, service in config["services"].items():
            assert service.get("network_mode") == "host", f"{name} is not on the host network"
            assert "networks" not in service, name
        assert not config.get("networks"), config.get("networks")
        for name in ("nnserve", "nnserve-gpu"):
            assert config["services"][name]["build"]["network"] == "none"
        assert config["services"]["nnserve"]["environment"]["NNSERVE_HOST"] == "127.0.0.1"
        if profile_args:  # on one host network, the two replicas' four ports must all differ
            ports = [config["services"][n]["environment"][k] for n in ("nnserve", "nnserve-gpu")
                     for k in ("NNSERVE_PORT", "NNSERVE_GRPC_PORT")]
            assert len(set(ports)) == 4, ports
        assert config["services"]["prometheus"]["extra_hosts"]["nnserve"] == "127.0.0.1"


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The config check is real: docker-compose refuses an invalid service key."""
    binary = require_tool("docker-compose", HINT)
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE.read_text().replace("    restart: unless-stopped", "    restart_policy: always", 1)
    broken.write_text(text)
    assert run([binary, "-f", str(broken), "config", "-q"], check=False).returncode != 0
