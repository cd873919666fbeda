"""Policy checks on the rendered Kubernetes manifests (``kubectl kustomize`` of each overlay).

``make lint-deploy`` validates the same objects against the Kubernetes schemas
(``kubernetes-validate --strict``) and runs checkov, hadolint and yamllint; this file asserts what
the project promises of them, including the required fields of the custom resources that have no
bundled schema (ServiceMonitor, the Milvus operator's ``Milvus``).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.auth import parse_tokens, token_hash
from core.settings import GatewaySettings, split_address

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
WORKLOADS = ("Deployment", "Job", "CronJob")
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/version")


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (it comes with the machine image)"
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)], capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    spec = workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
    return dict(spec["template"]["metadata"]["labels"])


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    for workload in objects:
        if workload["kind"] in WORKLOADS:
            spec = pod_spec(workload)
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield workload, spec, container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


WORKLOAD_NAMES = {"t2i-gateway", "t2i-web", "triton", "t2i-export", "t2i-reindex-full", "t2i-reindex-incremental", "t2i-reindex-finalize"}


def test_every_container_has_resources_a_security_context_and_probes(objects: list[dict[str, Any]]) -> None:
    checked = set()
    for workload, spec, container in containers(objects):
        checked.add(workload["metadata"]["name"])
        where = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})) and {"cpu", "memory"} <= set(resources.get("limits", {})), where
        context = container.get("securityContext", {})
        assert context.get("allowPrivilegeEscalation") is False and context.get("readOnlyRootFilesystem") is True, where
        assert context.get("capabilities", {}).get("drop") == ["ALL"], where
        assert spec["securityContext"].get("runAsNonRoot") is True and spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        if workload["kind"] == "Deployment":  # servers: probes; jobs run to completion
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container), where
    assert checked >= WORKLOAD_NAMES  # the loop saw the workloads (an empty one would check nothing)


def test_gpu_pods_request_a_gpu_and_tolerate_gpu_nodes(objects: list[dict[str, Any]]) -> None:
    triton = named(objects, "Deployment", "triton")
    spec = pod_spec(triton)
    [container] = spec["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])
    # Minutes of model loading before liveness can kill it; then readiness and liveness on Triton's endpoints.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready" and container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert any(arg.startswith("--grpc-max-connection-age=") for arg in container["args"])
    gpu_users = {w["metadata"]["name"] for w, _, c in containers(objects) if "nvidia.com/gpu" in c["resources"].get("limits", {})}
    assert gpu_users == {"triton"}


def test_each_deployment_has_a_pdb_and_an_autoscaling_v2_hpa(objects: list[dict[str, Any]]) -> None:
    assert {d["metadata"]["name"] for d in of_kind(objects, "Deployment")} >= {"t2i-gateway", "t2i-web", "triton"}  # the loop below has work
    for deployment in of_kind(objects, "Deployment"):
        labels = pod_labels(deployment)
        assert [p for p in of_kind(objects, "PodDisruptionBudget") if selects(p["spec"]["selector"]["matchLabels"], labels)], deployment["metadata"]["name"]
        hpas = [h for h in of_kind(objects, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
        assert len(hpas) == 1 and hpas[0]["apiVersion"] == "autoscaling/v2"
    triton_hpa = named(objects, "HorizontalPodAutoscaler", "triton")
    assert triton_hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_us_per_request"


def test_every_object_is_labelled_and_no_image_floats(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert all(label in labels for label in LABELS), f"{obj['kind']}/{obj['metadata']['name']} lacks {set(LABELS) - set(labels)}"
    for _, _, container in containers(objects):
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image
    milvus = named(objects, "Milvus", "milvus")
    assert not milvus["spec"]["components"]["image"].endswith(":latest")


@pytest.mark.parametrize("overlay", ["dev", "prod", "local"])
def test_each_image_entry_of_an_overlay_names_an_image_of_the_base(overlay: str) -> None:
    """An ``images:`` entry that names no image of the base changes nothing, and kustomize says nothing.

    The base already renames ``text2image-search`` to its registry: an overlay (and an operator
    editing prod's registry) must name that, or the edit silently renders the base's image.
    """
    entries = yaml.safe_load((ROOT / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()).get("images", [])
    assert entries, overlay
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (it comes with the machine image)"
    base = subprocess.run([kubectl, "kustomize", str(ROOT / "k8s" / "base")], capture_output=True, text=True, check=True).stdout
    base_images = {container["image"].rsplit(":", 1)[0] for _, _, container in containers([d for d in yaml.safe_load_all(base) if d])}
    rendered = {container["image"] for _, _, container in containers(render(overlay))}
    for entry in entries:
        assert entry["name"] in base_images, f"{overlay}: images entry {entry['name']!r} matches none of {sorted(base_images)}"
        assert f"{entry.get('newName', entry['name'])}:{entry['newTag']}" in rendered, (overlay, entry)


def test_the_docs_registry_edit_of_prod_renders_the_pushed_digests(tmp_path: Path) -> None:
    """docs/deploy.md's ``images:`` block, put in a copy of prod's kustomization, renders every image of ours by digest."""
    docs = (ROOT / "docs" / "deploy.md").read_text()
    block = docs[docs.index("```yaml\nimages:") + len("```yaml\n") :]
    block = block[: block.index("```")].replace("<your-registry>", "registry.test:5000/t2i").replace("<digest>", "a" * 64)
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    prod = tmp_path / "k8s" / "overlays" / "prod" / "kustomization.yaml"
    kustomization = yaml.safe_load(prod.read_text())
    kustomization["images"] = yaml.safe_load(block)["images"]
    prod.write_text(yaml.safe_dump(kustomization))
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the manifests (it comes with the machine image)"
    out = subprocess.run([kubectl, "kustomize", str(prod.parent)], capture_output=True, text=True, check=True).stdout
    images = {container["image"] for _, _, container in containers([d for d in yaml.safe_load_all(out) if d])}
    ours = {image for image in images if "text2image-search" in image}
    digest = "@sha256:" + "a" * 64
    assert ours == {f"registry.test:5000/t2i/text2image-search{digest}", f"registry.test:5000/t2i/text2image-search-tools{digest}"}, images


def test_service_ports_match_what_the_processes_listen_on(objects: list[dict[str, Any]]) -> None:
    config = named(objects, "ConfigMap", "t2i-config")["data"]
    defaults = GatewaySettings()
    listen_port = split_address(config["T2I_LISTEN"])[1]
    assert listen_port == split_address(defaults.listen)[1] == 50051
    assert int(config["T2I_METRICS_PORT"]) == defaults.metrics_port
    gateway = pod_spec(named(objects, "Deployment", "t2i-gateway"))["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"grpc": listen_port, "metrics": int(config["T2I_METRICS_PORT"])}
    assert gateway["readinessProbe"]["grpc"]["port"] == listen_port
    for name in ("t2i-gateway", "t2i-gateway-headless", "t2i-gateway-metrics"):
        for port in named(objects, "Service", name)["spec"]["ports"]:
            assert ports[port["targetPort"]] == (port["port"] if port["name"] == "grpc" else int(config["T2I_METRICS_PORT"]))
    triton = pod_spec(named(objects, "Deployment", "triton"))["containers"][0]
    triton_ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert f"--grpc-port={triton_ports['grpc']}" in triton["args"] and f"--metrics-port={triton_ports['metrics']}" in triton["args"]
    # The gateway reaches Triton through the headless Service, balanced per request.
    target = config["T2I_TRITON_URL"]
    assert target.startswith("dns:///")
    host, port = split_address(target.removeprefix("dns:///"))
    headless = named(objects, "Service", host)
    assert headless["spec"]["clusterIP"] == "None" and port == triton_ports["grpc"]
    assert {p["port"] for p in headless["spec"]["ports"]} >= {port}
    milvus_host, milvus_port = split_address(config["T2I_MILVUS_URI"].removeprefix("http://"))
    assert milvus_host == f"{named(objects, 'Milvus', 'milvus')['metadata']['name']}-milvus" and milvus_port == 19530  # the operator's proxy Service


def test_the_reindex_jobs_are_indexed_and_sharded_like_the_config(objects: list[dict[str, Any]]) -> None:
    config = named(objects, "ConfigMap", "t2i-config")["data"]
    full = named(objects, "Job", "t2i-reindex-full")
    cron = named(objects, "CronJob", "t2i-reindex-incremental")
    for spec in (full["spec"], cron["spec"]["jobTemplate"]["spec"]):
        assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == int(config["REINDEX_SHARDS"])
    assert "--run-id" in pod_spec(full)["containers"][0]["args"] and "--run-id" not in pod_spec(cron)["containers"][0]["args"]
    assert pod_spec(named(objects, "Job", "t2i-reindex-finalize"))["containers"][0]["args"][0] == "finalize"
    export = pod_spec(named(objects, "Job", "t2i-export"))["containers"][0]
    assert export["image"].split("/")[-1].startswith("text2image-search-tools:") and "/models" in export["args"]


def test_only_the_gateway_and_the_jobs_reach_triton_and_milvus(objects: list[dict[str, Any]]) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")]
    assert deny, "no default-deny ingress policy"
    for target, label, port in (("triton", "text2image-search/triton-client", 8001), ("milvus", "text2image-search/milvus-client", 19530)):
        [policy] = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == target]
        client_rules = [r for r in policy["spec"]["ingress"] if any(f.get("podSelector", {}).get("matchLabels", {}).get(label) == "true" for f in r["from"])]
        assert [rule["ports"] for rule in client_rules] == [[{"port": port, "protocol": "TCP"}]]
        clients = {w["metadata"]["name"] for w in objects if w["kind"] in WORKLOADS and pod_labels(w).get(label) == "true"}
        assert clients and clients <= {"t2i-gateway", "t2i-reindex-full", "t2i-reindex-finalize", "t2i-reindex-incremental"}, clients
        assert "t2i-gateway" in clients


def test_custom_resources_have_their_required_fields(objects: list[dict[str, Any]]) -> None:
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    monitors = of_kind(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"triton", "t2i-gateway"}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        matched = [s for s in services.values() if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert len(matched) == 1, monitor["metadata"]["name"]
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in matched[0]["spec"]["ports"]}
    milvus = named(objects, "Milvus", "milvus")
    assert milvus["apiVersion"] == "milvus.io/v1beta1" and milvus["spec"]["mode"] == "cluster"
    components, dependencies = milvus["spec"]["components"], milvus["spec"]["dependencies"]
    assert dependencies["msgStreamType"] in ("pulsar", "kafka", "woodpecker", "rocksmq", "natsmq", "custom", "")
    query = components["queryNode"]["resources"]
    assert query["requests"]["memory"] == query["limits"]["memory"]  # Milvus sizes loading from the limit
    assert components["mixCoord"]["replicas"] >= 1 and "etcd" in dependencies and "storage" in dependencies
    assert milvus["spec"]["config"]["common"]["security"]["authorizationEnabled"] is True


def test_prod_runs_milvus_with_production_settings() -> None:
    milvus = named(render("prod"), "Milvus", "milvus")["spec"]
    assert milvus["dependencies"]["etcd"]["inCluster"]["values"]["replicaCount"] == 3
    assert milvus["dependencies"]["storage"]["type"] == "S3" and milvus["dependencies"]["storage"]["external"] is True
    assert milvus["components"]["queryNode"]["replicas"] >= 2 and milvus["components"]["mixCoord"]["replicas"] >= 2


def test_the_gateway_reads_its_tokens_from_a_mounted_secret(objects: list[dict[str, Any]]) -> None:
    gateway = named(objects, "Deployment", "t2i-gateway")
    spec = pod_spec(gateway)
    container = spec["containers"][0]
    path = next(item["value"] for item in container["env"] if item["name"] == "T2I_AUTH_TOKENS_FILE")
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert "subPath" not in mount  # a subPath mount never sees Secret updates: rotation would need a restart
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"].startswith("t2i-gateway-tokens") and volume["secret"]["items"][0]["path"] == path.rsplit("/", 1)[1]


def test_the_dev_token_secret_is_a_valid_token_file() -> None:
    secret = next(o for o in render("dev") if o["kind"] == "Secret" and o["metadata"]["name"].startswith("t2i-gateway-tokens"))
    entries = parse_tokens(base64.b64decode(secret["data"]["tokens"]).decode())
    assert {entry.name: sorted(entry.scopes) for entry in entries} == {"dev-read": ["read"], "dev-write": ["read", "write"]}
    assert entries[1].digest == token_hash("t2i-dev-write-token")  # the value the overlay's comment gives


def test_the_search_page_serves_http_and_asks_the_gateway_service(objects: list[dict[str, Any]]) -> None:
    from starlette.testclient import TestClient

    from core.settings import WebSettings
    from web.app import create_app

    web = named(objects, "Deployment", "t2i-web")
    [container] = pod_spec(web)["containers"]
    assert container["command"] == ["python", "-m", "web.server"] and container["image"].split("/")[-1].startswith("text2image-search:")
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert split_address(env["T2I_WEB_LISTEN"]) == ("0.0.0.0", port)
    # HTTP probes on a path the real page answers with 200 (its gateway channel is never used here).
    probes = [container[probe]["httpGet"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert {(p["path"], p["port"]) for p in probes} == {("/healthz", "http")}
    with TestClient(create_app(WebSettings(gateway="127.0.0.1:9"), token="unused")) as client:
        answer = client.get(probes[0]["path"])
    assert answer.status_code == 200 and answer.text == "ok"
    # The page asks the gateway's ClusterIP Service on its gRPC port; its own Service and policy open only HTTP.
    host, gateway_port = split_address(env["T2I_WEB_GATEWAY"])
    gateway_service = named(objects, "Service", host)
    assert gateway_service["spec"].get("clusterIP") != "None" and [p["port"] for p in gateway_service["spec"]["ports"]] == [gateway_port]
    assert gateway_port == split_address(named(objects, "ConfigMap", "t2i-config")["data"]["T2I_LISTEN"])[1]
    assert [p["targetPort"] for p in named(objects, "Service", "t2i-web")["spec"]["ports"]] == ["http"]
    [policy] = [p for p in of_kind(objects, "NetworkPolicy") if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "t2i-web"]
    assert [rule["ports"] for rule in policy["spec"]["ingress"]] == [[{"port": port, "protocol": "TCP"}]]
    # The page reaches neither Triton nor Milvus.
    assert not {"text2image-search/triton-client", "text2image-search/milvus-client"} & set(pod_labels(web))


def test_the_search_page_reads_its_token_from_a_mounted_secret(objects: list[dict[str, Any]]) -> None:
    spec = pod_spec(named(objects, "Deployment", "t2i-web"))
    container = spec["containers"][0]
    path = next(item["value"] for item in container["env"] if item["name"] == "T2I_TOKEN_FILE")
    assert "T2I_TOKEN" not in {item["name"] for item in container["env"]}  # never a literal token
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True and "subPath" not in mount
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"].startswith("t2i-web-token") and volume["secret"]["items"] == [{"key": "token", "path": path.rsplit("/", 1)[1]}]


def test_the_dev_page_token_is_a_read_only_token_of_the_gateway() -> None:
    objects = render("dev")
    secrets = {o["metadata"]["name"].rsplit("-", 1)[0]: o for o in objects if o["kind"] == "Secret"}
    token = base64.b64decode(secrets["t2i-web-token"]["data"]["token"]).decode()
    entries = parse_tokens(base64.b64decode(secrets["t2i-gateway-tokens"]["data"]["tokens"]).decode())
    [entry] = [e for e in entries if e.digest == token_hash(token)]
    assert sorted(entry.scopes) == ["read"]  # the page searches and never writes
    volumes = pod_spec(named(objects, "Deployment", "t2i-web"))["volumes"]
    assert [v["secret"]["secretName"] for v in volumes if "secret" in v] == [secrets["t2i-web-token"]["metadata"]["name"]]  # the generated name
