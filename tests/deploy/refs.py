"""Every PromQL expression the deploy files contain, and the metric names they refer to.

The dashboard, the alert rules and the prometheus-adapter rules name nnserve's metrics as strings; these
helpers collect them so tests can parse each one with promtool and check each name against a real scrape.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "nnserve.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ADAPTER_RULES = DEPLOY / "k8s" / "hpa-queue-wait" / "adapter-rules.yaml"

# Grafana's built-in interval variables, replaced by a plain duration so promtool can parse the query.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_METRIC = re.compile(r"\b(nnserve_[a-zA-Z0-9_]+)\b")
# `metric{a="x", b=~"y"}`: the selector's label names.
_SELECTOR = re.compile(r"\b(nnserve_[a-zA-Z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def dashboard_panels(dashboard: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    board = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def dashboard_exprs(dashboard: dict[str, Any] | None = None) -> dict[str, str]:
    """'panel title / refId' -> raw expression (Grafana variables still in), plus the variable queries."""
    board = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())
    exprs = {}
    for panel in dashboard_panels(board):
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']!r} / {target['refId']}"] = target["expr"]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text)
        if match:  # label_values(<selector>, label): the selector is PromQL
            exprs[f"variable {variable['name']}"] = match.group(1)
    return exprs


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {f"alert {rule['alert']}": rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def adapter_exprs() -> dict[str, str]:
    """The prometheus-adapter queries, with its Go-template placeholders filled as the adapter would."""
    rules = yaml.safe_load(ADAPTER_RULES.read_text())
    exprs = {}
    for i, rule in enumerate(rules["rules"]["custom"]):
        query = rule["metricsQuery"].replace("<<.GroupBy>>", "pod").replace(
            "<<.LabelMatchers>>", 'namespace="nnserve", pod=~"nnserve-.*"')
        exprs[f"adapter rule {i} metricsQuery"] = query
        exprs[f"adapter rule {i} seriesQuery"] = rule["seriesQuery"]
    return exprs


def all_exprs() -> dict[str, str]:
    return {**dashboard_exprs(), **alert_exprs(), **adapter_exprs()}


def substitute_grafana(expr: str, variables: set[str]) -> str:
    """Replace $var / ${var} with what Grafana would send for "All" (.*) and built-ins with durations."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name in variables:
            return ".*"
        raise KeyError(f"undefined Grafana variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))


def selector_labels(expr: str) -> dict[str, set[str]]:
    """metric name -> label names used in its selectors in this expression."""
    found: dict[str, set[str]] = {}
    for metric, body in _SELECTOR.findall(expr):
        names = {m.group(1) for part in body.split(",") if (m := _MATCHER.match(part))}
        found.setdefault(metric, set()).update(names)
    return found


def exposed(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """From a /metrics text: every series name a query may use, and the label names seen per series name.

    A family with no sample yet (a labelled metric nobody observed) still exposes its names by type.
    """
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                "summary": ["_sum", "_count", "_created"], "gauge": [""], "info": ["_info"]}
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
        for sample in family.samples:
            names.add(sample.name)
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels
