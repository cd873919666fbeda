"""The PrometheusRule of k8s/monitoring, checked by the real tool: ``promtool check rules`` on its rules and
``promtool test rules`` firing each alert on synthetic series (``alerts_test.yaml``).

kubernetes-validate has no schema for the custom resource; this file checks its fields, that every
metric it names exists (``monitoring.py``), and that the alerts agree with the code and the docs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.metrics import BUCKETS
from gateway.telemetry import SERVER_FAULTS
from reindex.report import EXIT_ERROR, EXIT_FAILED, EXIT_UNSETTLED
from tests.support.monitoring import ROOT, metric_names, only, render, rules, run_promtool, unknown

UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
RULES_FILE = "t2i-alerts.rules.yaml"  # the name alerts_test.yaml loads
ALERTS = {
    "T2IErrorRatioHigh", "T2ISearchLatencyP99High", "T2ISheddingSustained", "T2IGatewayNotReady", "T2INoGatewayReady",
    "T2ITritonQueueTimeHigh", "T2IReindexFailed", "T2IReindexPodFailed",
}  # fmt: skip


def alert(name: str) -> dict[str, Any]:
    [found] = [rule for rule in rules() if rule.get("alert") == name]
    return found


@pytest.fixture(params=["dev", "prod"])
def rules_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The rendered PrometheusRule's groups as a Prometheus rules file, beside a copy of the unit tests."""
    spec = only(request.param, "PrometheusRule", "t2i-alerts")["spec"]
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump({"groups": spec["groups"]}, sort_keys=False))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return tmp_path


def test_promtool_accepts_the_rules(rules_dir: Path) -> None:
    checked = run_promtool("check", "rules", RULES_FILE, cwd=rules_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_promtool_fires_each_alert_on_synthetic_series(rules_dir: Path) -> None:
    tested = run_promtool("test", "rules", UNIT_TESTS.name, cwd=rules_dir)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # Each alert is expected to fire somewhere, and to stay quiet somewhere (pending, or a near miss).
    cases = [case for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == ALERTS
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == ALERTS


def test_the_rule_resource_has_what_the_operator_needs() -> None:
    for overlay in ("dev", "prod"):
        rule = only(overlay, "PrometheusRule", "t2i-alerts")
        assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["namespace"]
        groups = rule["spec"]["groups"]
        assert len({g["name"] for g in groups}) == len(groups) and all(g["rules"] for g in groups)
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)) and set(names) == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert re.fullmatch(r"\d+m", rule.get("for", "0m")), rule["alert"]


def test_every_metric_the_alerts_name_exists() -> None:
    named = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert {"t2i_requests_total", "t2i_ready", "nv_inference_queue_duration_us", "kube_job_failed"} <= named  # the reader found them
    assert unknown(named) == set()


def test_every_runbook_is_a_section_of_docs_deploy() -> None:
    headings = re.findall(r"^#{2,4} (.+)$", (ROOT / "docs" / "deploy.md").read_text(), flags=re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}
    for rule in rules():
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == "docs/deploy.md" and anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]


def test_the_alerts_agree_with_the_code() -> None:
    # The error ratio counts exactly the codes the gateway marks as server faults.
    codes = re.search(r'code=~"([^"]+)"', alert("T2IErrorRatioHigh")["expr"])
    assert codes and set(codes.group(1).split("|")) == {code.name for code in SERVER_FAULTS}
    # The p99 target is a bucket bound of the latency histogram, so the quantile is not interpolated across it.
    assert re.search(r">\s*0\.1\b", alert("T2ISearchLatencyP99High")["expr"]) and 0.1 in BUCKETS
    # Triton's alert watches the models of the repository.
    models = re.search(r'model=~"([^"]+)"', alert("T2ITritonQueueTimeHigh")["expr"])
    assert models and set(models.group(1).split("|")) == {p.name for p in (ROOT / "model_repository").iterdir() if (p / "config.pbtxt").is_file()}


def test_the_reindex_alerts_see_every_reindex_job_and_its_exit_codes() -> None:
    pattern = re.search(r'job_name=~"([^"]+)"', alert("T2IReindexPodFailed")["expr"])
    assert pattern and pattern.group(1) == re.search(r'job_name=~"([^"]+)"', alert("T2IReindexFailed")["expr"]).group(1)  # type: ignore[union-attr]
    objects = render("prod")
    jobs = [o for o in objects if o["kind"] == "Job"]
    crons = [o for o in objects if o["kind"] == "CronJob"]
    reindex = [j["metadata"]["name"] for j in jobs if j["metadata"]["name"].startswith("t2i-reindex")]
    reindex += [f"{c['metadata']['name']}-29400000" for c in crons]  # a CronJob's Jobs: its name and the scheduled minute
    assert len(reindex) == 3 and all(re.fullmatch(pattern.group(1), name) for name in reindex)
    assert not re.fullmatch(pattern.group(1), "t2i-export")
    # With restartPolicy Never each non-zero exit is a failed pod, which kube_job_status_failed counts.
    templates = [j["spec"]["template"] for j in jobs] + [c["spec"]["jobTemplate"]["spec"]["template"] for c in crons]
    assert all(t["spec"]["restartPolicy"] == "Never" for t in templates)
    described = alert("T2IReindexPodFailed")["annotations"]["description"]
    assert (EXIT_ERROR, EXIT_FAILED, EXIT_UNSETTLED) == (2, 3, 4)
    assert all(f"{code} " in described for code in (EXIT_ERROR, EXIT_FAILED, EXIT_UNSETTLED))
