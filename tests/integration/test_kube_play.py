"""The whole stack in containers from the manifests: ``podman kube play`` of ``k8s/overlays/local``.

The overlay is rendered with ``kubectl kustomize`` and its pod specs run as podman 4.3 can run them,
doing here what a kubelet would do and podman does not:

- Jobs and CronJobs (which podman does not play) run as Pods of their pod templates (index 0 of an
  Indexed Job, with ``JOB_COMPLETION_INDEX``), in order: export, then the reindex and its finalize
  once Triton and Milvus are ready, then the incremental CronJob's run;
- ``$(VAR)`` references in commands and arguments are expanded from the container's environment;
- an emptyDir becomes a folder of the pod's own, mode 0777 (podman 4.3 makes one root-owned named
  volume per name, shared between pods);
- each Secret becomes a podman secret (``secretKeyRef``), and a Secret volume is projected into a
  folder mounted read-only (podman 4.3.1 crashes on Secret volumes);
- on the host's network, containers' ports are left out (podman 4.3 refuses to map them there);
- startup, readiness and liveness probes (HTTP for Triton, Milvus and the page, gRPC health for the
  gateway) are run by the test.

The pods, volumes (``model-repository``, ``milvus-data``) and secrets have fixed names, and the pods
fixed loopback ports: one run at a time per host (``make test``, CI; the lead's heavy lock here).

What cannot run here is still checked elsewhere: Services, HPAs, PDBs and NetworkPolicies by
``make lint-deploy`` and ``tests/unit/test_k8s_policy.py``; the Milvus operator's resource by the
policy test's schema checks (the local overlay runs a standalone Milvus instead).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from t2i.client import GatewayClient
from tests.support.containers import assert_locked_down, assert_page_searches, podman, readable_photos
from tests.support.polling import wait_for
from tests.support.stack import PROJECT_ROOT

OVERLAY = PROJECT_ROOT / "k8s" / "overlays" / "local"
IMAGES_PLACEHOLDER = "/srv/t2i-local/images"
READ_TOKEN = "t2i-dev-read-token"  # the local overlay's placeholder read token
PHOTOS = 6
# The first test of a session that needs the images pays for building them (about 8 minutes on a machine
# that never built them) inside its own timeout: more than the suite's 900 s default.
pytestmark = pytest.mark.timeout(2400)
VOLUMES = ("model-repository", "milvus-data")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` escapes, anything else stays."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def test_expand_follows_kubernetes_rules() -> None:
    env = {"EXPORT_MODEL": "tiny"}
    assert expand("$(EXPORT_MODEL)", env) == "tiny"
    assert expand("x$(MISSING)y", env) == "x$(MISSING)y" and expand("$$(EXPORT_MODEL)", env) == "$(EXPORT_MODEL)"


class Cluster:
    """The rendered overlay, turned into what podman 4.3 plays, and the pods it started."""

    def __init__(self, rendered: str, work: Path):
        self.objects = list(yaml.safe_load_all(rendered))
        self.work = work
        self.pods: list[str] = []
        # podman 4.3 makes each emptyDir a named volume called after it ('tmp', 'dshm'...): the ones this run adds are removed.
        self.volumes_before = set(podman("volume", "ls", "--format", "{{.Name}}").stdout.split())

    def find(self, kind: str, name: str) -> dict[str, Any]:
        matches = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
        return matches[0]

    @property
    def config(self) -> dict[str, Any]:
        return self.find("ConfigMap", "t2i-config")

    def secrets(self) -> None:
        """Every Secret as a podman secret: a JSON map of base64 values, which podman 4.3's secretKeyRef reads."""
        for secret in (o for o in self.objects if o["kind"] == "Secret"):
            name = secret["metadata"]["name"]
            podman("secret", "rm", name, check=False)
            path = self.work / f"secret-{name}.json"
            path.write_text(json.dumps(secret.get("data", {})))
            podman("secret", "create", name, str(path))

    def pod_spec(self, spec: dict[str, Any], pod: str) -> dict[str, Any]:
        """``spec`` with $(VAR) expanded and Secret volumes projected into folders, as the kubelet would."""
        spec = copy.deepcopy(spec)
        config = self.config["data"]
        for container in spec["containers"]:
            env = {**{k: str(v) for ref in container.get("envFrom", []) if "configMapRef" in ref for k, v in config.items()}}
            env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
            for key in ("command", "args"):
                if key in container:
                    container[key] = [expand(str(arg), env) for arg in container[key]]
            if spec.get("hostNetwork"):
                # On the host's network a containerPort is the host's port already; podman 4.3 refuses
                # to map it ("PortMappings can only be used with Bridge"). Probes keep reading the rendered ports.
                container.pop("ports", None)
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                # podman 4.3 makes an emptyDir a named volume shared by every pod that names it alike, owned
                # by root: a folder of the pod's own, mode 0777 as the kubelet makes them, instead.
                folder = self.work / "emptydir" / pod / volume["name"]
                folder.mkdir(parents=True)
                folder.chmod(0o777)
                volume.pop("emptyDir")
                volume["hostPath"] = {"path": str(folder), "type": "Directory"}
            if "secret" in volume:
                data = self.find("Secret", volume["secret"]["secretName"])["data"]
                folder = self.work / "secrets" / pod / volume["name"]
                folder.mkdir(parents=True)
                items = volume["secret"].get("items") or [{"key": key, "path": key} for key in data]
                for item in items:
                    (folder / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
                    (folder / item["path"]).chmod(0o644)  # the Secret volume's defaultMode
                folder.chmod(0o755)
                volume.pop("secret")
                volume["hostPath"] = {"path": str(folder), "type": "Directory"}
        return spec

    def play(self, name: str, kind: str = "Deployment", index: int = 0) -> str:
        """Play a Deployment as it is, or a Job's or CronJob's pod template as a Pod; the pod's name."""
        obj = self.find(kind, name)
        if kind == "Deployment":
            workload = copy.deepcopy(obj)
            workload["spec"]["template"]["spec"] = self.pod_spec(obj["spec"]["template"]["spec"], name)
            pod = f"{name}-pod"
        else:
            job = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
            spec = self.pod_spec(job["template"]["spec"], name)
            if job.get("completionMode") == "Indexed":
                for container in spec["containers"]:
                    container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
            pod = name
            workload = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": job["template"]["metadata"]["labels"]}, "spec": spec}
        for old in self.pods_named(pod):
            podman("pod", "rm", "--force", old, check=False)
        path = self.work / f"{pod}.yaml"
        path.write_text(yaml.safe_dump_all([self.config, workload]))
        podman("kube", "play", str(path), timeout=120)
        (played,) = self.pods_named(pod)  # a Deployment's replica is '<name>-pod-0'
        self.pods.append(played)
        return played

    @staticmethod
    def pods_named(pod: str) -> list[str]:
        names = podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
        return [name for name in names if re.fullmatch(rf"{re.escape(pod)}(-\d+)?", name)]

    def containers(self, pod: str) -> list[dict[str, Any]]:
        listing = json.loads(podman("ps", "--all", "--filter", f"pod={pod}", "--format", "json").stdout)
        return [c for c in listing if not c.get("IsInfra")]

    def wait_exit(self, pod: str, timeout_s: float) -> int:
        """Wait for a Job's pod to finish; its container's exit code."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            (container,) = self.containers(pod)
            if container["State"] == "exited":
                return int(container["ExitCode"])
            time.sleep(1)
        raise AssertionError(f"{pod} still running after {timeout_s} s:\n{self.logs(pod)}")

    def logs(self, pod: str) -> str:
        return "\n".join(
            podman("logs", c["Names"][0], check=False).stdout[-3000:] + podman("logs", c["Names"][0], check=False).stderr[-3000:] for c in self.containers(pod)
        )

    def down(self) -> None:
        for pod in reversed(self.pods):
            podman("pod", "rm", "--force", "--time", "3", pod, check=False, timeout=120)
        for volume in {*VOLUMES, *(set(podman("volume", "ls", "--format", "{{.Name}}").stdout.split()) - self.volumes_before)}:
            podman("volume", "rm", "--force", volume, check=False)
        for secret in (o for o in self.objects if o["kind"] == "Secret"):
            podman("secret", "rm", secret["metadata"]["name"], check=False)


def container_spec(cluster: Cluster, kind: str, name: str) -> dict[str, Any]:
    return dict(cluster.find(kind, name)["spec"]["template"]["spec"]["containers"][0])


def probe(cluster: Cluster, name: str, which: str) -> bool:
    """Run a Deployment's ``which`` probe (startupProbe, readinessProbe, livenessProbe) as the kubelet would; True when it passes.

    Host-network pods are probed on 127.0.0.1; the Milvus pod (own network) through its published host port.
    """
    spec = cluster.find("Deployment", name)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    check = container[which]
    ports = {p["name"]: p for p in container["ports"]}
    if "grpc" in check:
        with grpc.insecure_channel(f"127.0.0.1:{check['grpc']['port']}") as channel:
            request = health_pb2.HealthCheckRequest(service=check["grpc"].get("service", ""))
            return bool(health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status == health_pb2.HealthCheckResponse.SERVING)
    http = check["httpGet"]
    port = ports[http["port"]] if isinstance(http["port"], str) else {"containerPort": http["port"]}
    number = port["containerPort"] if spec.get("hostNetwork") else port["hostPort"]
    with urllib.request.urlopen(f"http://127.0.0.1:{number}{http['path']}", timeout=2) as response:
        return bool(200 <= response.status < 400)


def wait_ready(cluster: Cluster, name: str, timeout_s: float) -> None:
    container = container_spec(cluster, "Deployment", name)
    for which in ("startupProbe", "readinessProbe", "livenessProbe"):
        if which in container:
            try:
                wait_for(functools.partial(probe, cluster, name, which), timeout_s, f"{name} {which}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{cluster.logs(f'{name}-pod-0')}") from exc


@pytest.fixture(scope="module")
def cluster(container_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The local overlay played in order: Milvus, the export, Triton, the reindex and its finalize, the gateway, the page."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed to render the overlay")
    work = tmp_path_factory.mktemp("kube")
    work.chmod(0o755)
    images = readable_photos(work / "images", PHOTOS)
    rendered = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True).stdout
    cluster = Cluster(rendered.replace(IMAGES_PLACEHOLDER, str(images)), work)
    for volume in VOLUMES:
        podman("volume", "rm", "--force", volume, check=False)
    started = time.monotonic()

    def step(what: str) -> None:
        print(f"{time.monotonic() - started:5.0f} s  {what}", flush=True)

    try:
        cluster.secrets()
        cluster.play("milvus")
        step("images built, Milvus played")
        export = cluster.play("t2i-export", kind="Job")
        assert cluster.wait_exit(export, 600) == 0, cluster.logs(export)
        step("export exited 0")
        cluster.play("triton")
        wait_ready(cluster, "milvus", 120)
        wait_ready(cluster, "triton", 120)
        step("Milvus and Triton ready")
        reindex = cluster.play("t2i-reindex-full", kind="Job")
        assert cluster.wait_exit(reindex, 300) == 0, cluster.logs(reindex)
        finalize = cluster.play("t2i-reindex-finalize", kind="Job")
        assert cluster.wait_exit(finalize, 300) == 0, cluster.logs(finalize)
        step("reindex and finalize exited 0")
        cluster.play("t2i-gateway")
        wait_ready(cluster, "t2i-gateway", 90)
        cluster.play("t2i-web")
        wait_ready(cluster, "t2i-web", 60)
        step("gateway and page ready")
        yield cluster
    finally:
        cluster.down()


def test_search_through_the_gateway_pod_returns_the_reindexed_photos(cluster: Cluster) -> None:
    listen = cluster.config["data"]["T2I_LISTEN"]
    with GatewayClient(listen, timeout_s=20, token=READ_TOKEN) as client:
        reply = client.search_text("a cat", top_k=3)
        assert len(reply.hits) == 3 and all(hit.uri.startswith("/images/") for hit in reply.hits), reply
        assert client.info().count == PHOTOS


def test_page_pod_searches_and_shows_thumbnails(cluster: Cluster) -> None:
    port = container_spec(cluster, "Deployment", "t2i-web")["ports"][0]["containerPort"]
    assert_page_searches(f"http://127.0.0.1:{port}")


def test_pods_run_locked_down_as_the_manifests_say(cluster: Cluster) -> None:
    """User 10001, a read-only root filesystem and no capabilities, in every long-running pod."""
    for pod in ("t2i-gateway-pod-0", "triton-pod-0", "milvus-pod-0", "t2i-web-pod-0"):
        (container,) = cluster.containers(pod)
        assert_locked_down(container["Names"][0])


def test_incremental_cronjob_pod_exits_0_and_keeps_every_row(cluster: Cluster) -> None:
    """The CronJob's ``--mirror`` run over the unchanged folder: exit 0, nothing deleted, the gateway still finds every photo."""
    pod = cluster.play("t2i-reindex-incremental", kind="CronJob")
    assert cluster.wait_exit(pod, 300) == 0, cluster.logs(pod)
    with GatewayClient(cluster.config["data"]["T2I_LISTEN"], timeout_s=20, token=READ_TOKEN) as client:
        assert client.info().count == PHOTOS
        assert len(client.search_text("a cat", top_k=PHOTOS).hits) == PHOTOS
