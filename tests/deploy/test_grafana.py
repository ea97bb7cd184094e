"""The Grafana dashboard and its provisioning, validated structurally (no Grafana server runs here).

What a browser would show cannot be checked without Grafana; what is checked: the JSON is a dashboard Grafana
loads (schema fields, unique ids, a 24-column grid without overlaps, targets with refIds on the provisioned
datasource), it covers every view the deploy issue asks for, and the provisioning files point where
docker-compose.yml mounts them. PromQL and metric names are checked in test_promql.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy import refs
from tests.deploy.conftest import DEPLOY, REPO

GRAFANA = DEPLOY / "grafana"
PANEL_TYPES = {"row", "timeseries", "stat", "table", "heatmap", "gauge", "bargauge", "text", "piechart"}
CONTRACT_METRICS = {
    "nnserve_requests_total", "nnserve_request_latency_seconds", "nnserve_preprocess_seconds",
    "nnserve_queue_wait_seconds", "nnserve_compute_seconds", "nnserve_batch_size", "nnserve_queue_depth",
    "nnserve_queue_capacity", "nnserve_in_flight_requests", "nnserve_rejections_total", "nnserve_model_info",
    "nnserve_model_ready", "nnserve_model_load_failures_total",
}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dict(json.loads(refs.DASHBOARD.read_text()))


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    (source,) = doc["datasources"]
    return dict(source)


def test_dashboard_top_level(board: dict[str, Any]) -> None:
    assert board["uid"] == "nnserve" and board["title"]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert "id" not in board or board["id"] is None, "a provisioned dashboard must not carry a database id"
    assert board["time"]["from"].startswith("now-")
    assert isinstance(board["panels"], list) and board["panels"]


def test_panels_are_well_formed(board: dict[str, Any], datasource: dict[str, Any]) -> None:
    panels = refs.dashboard_panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel["type"] in PANEL_TYPES, f"{where}: unknown type {panel['type']}"
        assert panel.get("title"), where
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in "xywh"), where
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] + grid["w"] <= 24, f"{where}: {grid}"
        if panel["type"] == "row":
            continue
        assert panel.get("description"), f"{where}: say what the panel shows"
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, where
        targets = panel["targets"]
        assert targets, f"{where}: no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), f"{where}: duplicate refIds {ref_ids}"
        for target in targets:
            assert target["expr"].strip(), where
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], where


def test_panels_do_not_overlap(board: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r} at {(x, y)}"
                cells[(x, y)] = panel["title"]


def test_template_variables(board: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"job", "model"} <= set(variables)
    for variable in variables.values():
        assert variable["type"] == "query" and variable["includeAll"] and variable["allValue"] == ".*"
        assert variable["datasource"]["uid"] == "prometheus"


def _panel_by_title(board: dict[str, Any], pattern: str) -> dict[str, Any]:
    matches = [p for p in refs.dashboard_panels(board) if re.search(pattern, p["title"], re.I)]
    assert len(matches) == 1, f"want one panel titled /{pattern}/, found {[p['title'] for p in matches]}"
    return matches[0]


def _exprs(panel: dict[str, Any]) -> str:
    return "\n".join(t["expr"] for t in panel["targets"])


def test_dashboard_covers_the_required_views(board: dict[str, Any]) -> None:
    """Each view issue 4 lists, found by title and checked by what its queries compute."""
    rate = _exprs(_panel_by_title(board, r"request rate by model and status"))
    assert "nnserve_requests_total" in rate and re.search(r"by \(model, code\)", rate)
    errors = _exprs(_panel_by_title(board, r"^errors"))
    assert 'outcome!="success"' in errors
    latency = _exprs(_panel_by_title(board, r"latency p50 / p95 / p99"))
    for q in ("0.5", "0.95", "0.99"):
        quantile = f"histogram_quantile({q}, sum by (model, le) (rate(nnserve_request_latency_seconds_bucket"
        assert quantile in latency
    wait_compute = _exprs(_panel_by_title(board, r"queue wait vs compute"))
    assert "nnserve_queue_wait_seconds" in wait_compute and "nnserve_compute_seconds" in wait_compute
    batch = _panel_by_title(board, r"batch size distribution")
    assert batch["type"] == "heatmap" and batch["targets"][0]["format"] == "heatmap"
    assert "nnserve_batch_size_bucket" in _exprs(batch)
    assert "nnserve_queue_depth" in _exprs(_panel_by_title(board, r"queue depth"))
    rejects = _exprs(_panel_by_title(board, r"rejections and timeouts"))
    assert "nnserve_rejections_total" in rejects and "reason" in rejects
    versions = _panel_by_title(board, r"model versions and providers")
    assert versions["type"] == "table"
    by_version = r"by \(instance, model, version, providers, sha256\) \(nnserve_model_info"
    assert re.search(by_version, _exprs(versions))


def test_dashboard_uses_every_contract_metric(board: dict[str, Any]) -> None:
    used = set().union(*(refs.metric_names(e) for e in refs.dashboard_exprs(board).values()))
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert CONTRACT_METRICS - families == set(), f"not on the dashboard: {CONTRACT_METRICS - families}"


def test_provisioning_points_where_compose_mounts() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_in_container = mounts["./deploy/grafana/dashboards"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "nnserve.yml").read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file" and entry["options"]["path"] == dashboards_in_container
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_in_container + "/")
    assert (GRAFANA / "dashboards" / home.removeprefix(dashboards_in_container + "/")).is_file()


def test_datasource_points_at_compose_prometheus(datasource: dict[str, Any]) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert datasource["type"] == "prometheus" and datasource["uid"] == "prometheus"
    assert datasource["url"] == "${PROMETHEUS_URL}"
    assert compose["services"]["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
