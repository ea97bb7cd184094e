"""Prometheus config and alert rules, checked by promtool; then real Prometheus scraping a real nnserve."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.conftest import (
    DEPLOY,
    LiveServer,
    free_port,
    require_tool,
    run,
    send_predictions,
    wait_http,
)

PROM_DIR = DEPLOY / "prometheus"
HINT = "install Debian's prometheus package (deploy/ci-setup.sh)"


def test_promtool_check_config() -> None:
    promtool = require_tool("promtool", HINT)
    proc = run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert "SUCCESS: 1 rule files found" in proc.stdout, proc.stdout


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool", HINT)
    run([promtool, "check", "rules", str(PROM_DIR / "alerts.yml")])


def test_promtool_test_rules() -> None:
    promtool = require_tool("promtool", HINT)
    proc = run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROM_DIR)
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    alerts = {r["alert"] for g in yaml.safe_load((PROM_DIR / "alerts.yml").read_text())["groups"]
              for r in g["rules"]}
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - firing == set(), f"alerts never shown firing: {alerts - firing}"
    assert alerts - silent == set(), f"alerts never shown silent: {alerts - silent}"
    required = {"NNServeTargetDown", "NNServeHighErrorRate", "NNServeLatencyP99High", "NNServeQueueSaturated",
                "NNServeRejectingRequests", "NNServeModelNotReady"}
    assert required <= alerts, required - alerts


def _test_config(src: Path, dest: Path, nnserve_port: int, prom_port: int) -> Path:
    """deploy/prometheus/prometheus.yml with targets on 127.0.0.1 and a 1s scrape/evaluation interval.

    The DNS-discovered nnserve-gpu job is dropped: resolving it would query a name server off this machine.
    """
    config: dict[str, Any] = yaml.safe_load(src.read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] == "nnserve":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{nnserve_port}"]}]
        elif job["job_name"] == "prometheus":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{prom_port}"]}]
        else:
            assert "dns_sd_configs" in job, f"unexpected job {job['job_name']}: rewrite it for the test too"
            continue
        jobs.append(job)
    config["scrape_configs"] = jobs
    for rule_file in config.get("rule_files", []):
        (dest / rule_file).write_text((src.parent / rule_file).read_text())
    path = dest / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def prometheus(live_server: LiveServer, tmp_path: Path) -> Iterator[str]:
    binary = require_tool("prometheus", HINT)
    port = free_port()
    config = _test_config(PROM_DIR / "prometheus.yml", tmp_path, live_server.port, port)
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "GOMAXPROCS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/-/ready", 30, proc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-2000:]}") from None
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def _wait_for(url: str, promql: str, ok: Any, deadline_s: float = 30) -> list[dict[str, Any]]:
    end = time.monotonic() + deadline_s
    result: list[dict[str, Any]] = []
    while time.monotonic() < end:
        result = _query(url, promql)
        if ok(result):
            return result
        time.sleep(0.5)
    raise AssertionError(f"{promql}: not as expected within {deadline_s}s; last result {result}")


def test_prometheus_scrapes_nnserve_metrics(live_server: LiveServer, prometheus: str) -> None:
    """deploy/prometheus/prometheus.yml, pointed at a live nnserve, gets its request, latency and batch
    metrics with the labels the dashboard and alerts use; the alert rules evaluate without error on live
    data."""
    _wait_for(prometheus, 'up{job="nnserve"}', lambda r: r and r[0]["value"][1] == "1")
    sent = send_predictions(live_server, per_model=5)
    models = set(live_server.models)

    def by_model(result: list[dict[str, Any]]) -> set[str]:
        return {series["metric"]["model"] for series in result}

    ok_requests = ("sum by (model, version, protocol, outcome, code) (nnserve_requests_total"
                   '{job="nnserve", protocol="predict", outcome="success", code="200"})')

    def total(result: list[dict[str, Any]]) -> float:
        return sum(float(series["value"][1]) for series in result)

    _wait_for(prometheus, ok_requests, lambda r: by_model(r) >= models and total(r) >= sent)
    # A second round after a scrape saw the first, so rate() over the counters is non-zero.
    sent += send_predictions(live_server, per_model=5)
    requests = _wait_for(prometheus, ok_requests, lambda r: total(r) >= sent)
    for series in requests:
        assert series["metric"]["version"].isdigit(), series
    latency = _wait_for(prometheus,
                        'nnserve_request_latency_seconds_count{job="nnserve", protocol="predict"}',
                        lambda r: by_model(r) >= models)
    assert {"model", "version", "protocol", "instance", "job"} <= set(latency[0]["metric"]), latency[0]
    batches = _wait_for(prometheus, 'nnserve_batch_size_bucket{job="nnserve", le="+Inf"}',
                        lambda r: by_model(r) >= models)
    assert all(float(s["value"][1]) >= 1 for s in batches), batches
    _wait_for(prometheus, "histogram_quantile(0.99, sum by (model, le) "
                          '(rate(nnserve_request_latency_seconds_bucket{job="nnserve"}[1m])))',
              lambda r: by_model(r) >= models and all(float(s["value"][1]) > 0 for s in r))
    for metric in ("nnserve_queue_wait_seconds_count", "nnserve_compute_seconds_count", "nnserve_model_ready",
                   "nnserve_model_info", "nnserve_queue_capacity"):
        _wait_for(prometheus, f'{metric}{{job="nnserve"}}', lambda r: by_model(r) >= models)
    info = _query(prometheus, 'nnserve_model_info{job="nnserve"}')
    assert all({"providers", "sha256", "version"} <= set(s["metric"]) for s in info), info

    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    evaluated = [r for g in rules for r in g["rules"]]
    assert len(evaluated) >= 6, evaluated
    _wait_for(prometheus, "prometheus_rule_evaluations_total", lambda r: r and float(r[0]["value"][1]) > 0)
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    unhealthy = {r["name"]: r.get("lastError") for g in rules for r in g["rules"] if r["health"] == "err"}
    assert not unhealthy, unhealthy
    firing = {r["name"] for g in rules for r in g["rules"] if r.get("state") == "firing"}
    assert not firing & {"NNServeTargetDown", "NNServeModelNotReady"}, firing
