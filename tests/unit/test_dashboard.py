"""The Grafana dashboard of k8s/monitoring: a ConfigMap for Grafana's sidecar, with the panels on-call needs,
every query valid PromQL (``promtool check rules`` on them as recording rules), filtered on the
dashboard's namespace, and naming only metrics that exist (``monitoring.py``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.support.monitoring import DASHBOARD, dashboard, metric_names, only, panels, queries, run_promtool, unknown

# What the on-call person needs (issue 19), and the series that answer each.
NEEDED = {
    "request rate": {"t2i_requests_total"},
    "errors by code": {"t2i_requests_total"},
    "p50/p99 by method": {"t2i_request_seconds_bucket"},
    "shed and auth refusals": {"t2i_shed_total", "t2i_auth_refusals_total"},
    "Triton queue and compute time": {"nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us", "nv_inference_request_success"},
    "Milvus latency, Milvus's own": {"milvus_proxy_sq_latency_bucket"},
    "Milvus latency, seen by the gateway": {"t2i_downstream_seconds_bucket"},
    "readiness": {"t2i_ready"},
    "reindex progress": {"kube_job_status_succeeded", "kube_job_spec_completions"},
}


def panel_for(needed: set[str]) -> list[str]:
    return [p["title"] for p in panels() if needed <= set().union(*(metric_names(t["expr"]) for t in p["targets"]))]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_configmap_carries_the_dashboard_for_grafanas_sidecar(overlay: str) -> None:
    config = only(overlay, "ConfigMap", "t2i-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config["metadata"]["namespace"] and set(config["data"]) == {DASHBOARD.name}
    assert json.loads(config["data"][DASHBOARD.name]) == dashboard()


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board.get("id") is None  # provisioned: Grafana assigns the id
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"] and panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(t["datasource"] == panel["datasource"] for t in panel["targets"]), panel["title"]


def test_every_need_of_on_call_has_a_panel() -> None:
    for need, series in NEEDED.items():
        assert panel_for(series), f"no panel shows {need} ({sorted(series)})"
    [errors] = [p for p in panels() if p["title"] == "Errors by code"]
    assert "by (code)" in errors["targets"][0]["expr"]
    [latency] = [p for p in panels() if p["title"] == "Latency p50 and p99 by method"]
    assert [t["expr"].split(",")[0] for t in latency["targets"]] == ["histogram_quantile(0.5", "histogram_quantile(0.99"]
    assert all("by (method, le)" in t["expr"] for t in latency["targets"])
    assert any('target="milvus"' in t["expr"] for p in panels() for t in p["targets"] if "t2i_downstream_seconds_bucket" in t["expr"])


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    recorded = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries())]
    assert len(recorded) >= 20
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    checked = run_promtool("check", "rules", "queries.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(recorded)} rules found" in checked.stdout


def test_every_selector_filters_on_the_dashboards_namespace() -> None:
    # One install at a time: every series a panel selects carries namespace="$namespace".
    for panel in panels():
        for target in panel["targets"]:
            for name in metric_names(target["expr"]):
                selectors = re.findall(rf"\b{name}(\{{[^}}]*\}})?", target["expr"])
                assert selectors and all('namespace="$namespace"' in s for s in selectors), f"{panel['title']}: {name}"


def test_every_metric_the_dashboard_names_exists() -> None:
    named = set().union(*(metric_names(expr) for _, expr in queries()))
    assert {"t2i_ready", "nv_inference_queue_duration_us", "milvus_proxy_sq_latency_bucket", "kube_job_status_succeeded"} <= named
    assert unknown(named) == set()
