"""What the alert and dashboard tests share: the rendered monitoring objects, promtool, and the metric names.

Every metric a query names must exist: the gateway's own (``t2i_*``) in its live Prometheus registry,
the others in ``upstream_metrics.yaml`` (Triton, Milvus and kube-state-metrics, as their documentation
names them).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ROOT / "tests" / "unit" / "upstream_metrics.yaml"
DASHBOARD = ROOT / "k8s" / "monitoring" / "dashboards" / "text2image-search.json"

# The series each metric type exposes, by suffix (a Go or C++ counter keeps its name; Python's adds _total).
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (it comes with the machine image)"
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, check=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def only(overlay: str, kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in render(overlay) if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: 'make promtool' (run by 'make test') installs Debian's prometheus package"
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels, keywords or numbers)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings: label values, Grafana variables
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # grouping label lists
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        following = text[match.end() :].lstrip()
        if not following.startswith("(") and match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def _exposed(name: str, kind: str) -> set[str]:
    return {name + suffix for suffix in SUFFIXES[kind]}


@cache
def ours() -> frozenset[str]:
    """Every series name the gateway's metrics endpoint can expose (its live registry, as ``gateway.server`` builds it)."""
    from prometheus_client import REGISTRY

    import gateway.server  # noqa: F401  # registers every metric the gateway process holds

    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= _exposed(family.name, "histogram") | {family.name + "_created"}
        else:
            names |= _exposed(family.name, family.type if family.type in SUFFIXES else "gauge")
    return frozenset(name for name in names if name.startswith("t2i_"))


@cache
def upstream() -> dict[str, frozenset[str]]:
    """Component -> the series names its documented metrics expose."""
    listed = yaml.safe_load(UPSTREAM.read_text())
    return {component: frozenset(n for name, kind in spec["metrics"].items() for n in _exposed(name, kind)) for component, spec in listed.items()}


def unknown(names: set[str]) -> set[str]:
    """The names that are neither the gateway's nor documented by the component they claim to come from."""
    known = set(ours()).union(*upstream().values())
    return {name for name in names if name not in known}


def rules(overlay: str = "prod") -> list[dict[str, Any]]:
    return [rule for group in only(overlay, "PrometheusRule", "t2i-alerts")["spec"]["groups"] for rule in group["rules"]]


# Grafana's variables, as a query sees them once Grafana has filled them in.
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": "text2image-search"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables filled in) for every target."""
    filled = []
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            filled.append((panel["title"], expr))
    return filled
