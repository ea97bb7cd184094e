"""Every PromQL expression in the dashboard, alerts and adapter rules parses, and names real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy import refs
from tests.deploy.conftest import DEPLOY, LiveServer, require_tool, run, send_predictions

PROMTOOL_HINT = "install Debian's prometheus package (deploy/ci-setup.sh)"
# Names that are not nnserve's but may appear: Prometheus' own target health.
FOREIGN_METRICS = {"up"}


def dashboard_variables() -> set[str]:
    board = json.loads(refs.DASHBOARD.read_text())
    return {v["name"] for v in board["templating"]["list"]}


def parseable_exprs() -> dict[str, str]:
    """All expressions, Grafana variables replaced as Grafana would before sending the query."""
    variables = dashboard_variables()
    return {where: refs.substitute_grafana(expr, variables) for where, expr in refs.all_exprs().items()}


def missing_names(metrics_text: str) -> dict[str, set[str]]:
    """where -> nnserve metric names that the expression uses and the exposition does not have."""
    names, _ = refs.exposed(metrics_text)
    missing = {}
    for where, expr in refs.all_exprs().items():
        absent = refs.metric_names(expr) - names
        if absent:
            missing[where] = absent
    return missing


def test_there_are_expressions_to_check() -> None:
    exprs = refs.all_exprs()
    kinds = {where.split()[0] for where in exprs}
    assert {"panel", "alert", "adapter", "variable"} <= kinds, kinds
    assert len(exprs) >= 30, len(exprs)
    used = set().union(*(refs.metric_names(e) for e in exprs.values()))
    assert len(used) >= 12, sorted(used)


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool", PROMTOOL_HINT)
    exprs = parseable_exprs()
    # One group per expression, so promtool's error names the one that failed.
    groups = [{"name": where, "rules": [{"record": f"nnserve_deploy_check:{i}", "expr": expr}]}
              for i, (where, expr) in enumerate(exprs.items())]
    rules = tmp_path / "exprs.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    proc = run([promtool, "check", "rules", str(rules)], check=False)
    assert proc.returncode == 0, f"promtool rejected an expression:\n{proc.stdout}\n{proc.stderr}"
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout, proc.stdout


def test_a_broken_expression_is_caught_by_promtool(tmp_path: Path) -> None:
    """The parse check above is real: promtool refuses a malformed query the same way."""
    promtool = require_tool("promtool", PROMTOOL_HINT)
    rules = tmp_path / "bad.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [
        {"record": "x:y", "expr": "sum by (model (rate(nnserve_requests_total[1m]))"}]}]}))
    assert run([promtool, "check", "rules", str(rules)], check=False).returncode != 0


def test_grafana_variables_are_all_defined() -> None:
    variables = dashboard_variables()
    for where, expr in refs.dashboard_exprs().items():
        refs.substitute_grafana(expr, variables)  # raises KeyError on an undefined $variable
        assert "$" not in refs.substitute_grafana(expr, variables), where


def test_every_panel_query_names_a_metric() -> None:
    for where, expr in refs.dashboard_exprs().items():
        assert refs.metric_names(expr) or re.search(r"\bup\b", expr), f"{where}: no metric in {expr!r}"


def _declared_metrics_text() -> str:
    try:
        from prometheus_client import generate_latest

        from service.metrics import ServiceMetrics
    except ImportError as exc:  # service/ not importable here (no [serve] extra)
        pytest.skip(f"service.metrics not importable: {exc}")
    return generate_latest(ServiceMetrics().registry).decode()


def test_every_metric_named_is_declared_in_service_metrics() -> None:
    """Offline: the names exist in the one module that declares nnserve's metrics."""
    missing = missing_names(_declared_metrics_text())
    assert not missing, f"names used in deploy/ but not declared in service/metrics.py: {missing}"


def test_a_renamed_metric_fails_the_name_check() -> None:
    text = _declared_metrics_text()
    renamed = text.replace("nnserve_queue_wait_seconds", "nnserve_queue_wait_time_seconds")
    missing = missing_names(renamed)
    flat = set().union(*missing.values()) if missing else set()
    assert {"nnserve_queue_wait_seconds_bucket", "nnserve_queue_wait_seconds_sum"} <= flat, missing


def test_every_metric_named_exists_in_a_live_scrape(live_server: LiveServer) -> None:
    """Live: a real `nnserve serve` exposes every name the dashboard, alerts and adapter use, with the labels
    their selectors filter on."""
    send_predictions(live_server, per_model=3)
    # One bad request, so the rejection counter has a sample too.
    httpx.post(f"{live_server.url}/predict", json={"model": next(iter(live_server.models)), "inputs": [[1]]},
               timeout=30)
    text = httpx.get(f"{live_server.url}/metrics", timeout=30).text
    missing = missing_names(text)
    assert not missing, f"names used in deploy/ but absent from a live /metrics: {missing}"

    names, labels = refs.exposed(text)
    # Added by Prometheus at scrape time, not by the server.
    scrape_labels = {"job", "instance", "namespace", "pod"}
    wrong = {}
    for where, expr in refs.all_exprs().items():
        for metric, used in refs.selector_labels(expr).items():
            if metric in labels:  # only series with samples tell their labels
                unknown = used - labels[metric] - scrape_labels
                if unknown:
                    wrong[f"{where}: {metric}"] = unknown
    assert not wrong, f"selectors filter on labels the live metrics do not have: {wrong}"
    without_samples = sorted(
        {n for e in refs.all_exprs().values() for n in refs.metric_names(e)} - set(labels))
    print(f"metric names checked: {len(names)} exposed; no samples yet (labels unchecked): {without_samples}")


def test_deploy_folder_has_no_other_promql() -> None:
    """Guard for the collectors above: a new rules file or dashboard must be added to refs.py."""
    dashboards = sorted(p.name for p in (DEPLOY / "grafana" / "dashboards").glob("*.json"))
    rule_files = sorted(p.name for p in (DEPLOY / "prometheus").glob("*.yml"))
    assert dashboards == ["nnserve.json"], dashboards
    assert rule_files == ["alerts.yml", "alerts_test.yml", "prometheus.yml"], rule_files
