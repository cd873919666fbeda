"""compose.yaml, its CPU override and the local images' override, checked without images: podman-compose merges and interpolates them
(``podman-compose config``), the merged files validate against the compose-spec schema
(check-jsonschema's copy), and what they say agrees with the Kubernetes manifests and the settings.

tests/integration/test_compose.py runs the stack they describe under podman.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.auth import TOKEN_ENV, TOKEN_FILE_ENV
from core.settings import GatewaySettings, Settings, WebSettings, split_address
from tests.support.deploy_tools import deploy_tool
from tests.support.monitoring import only

ROOT = Path(__file__).resolve().parents[2]
COMPOSE, CPU, LOCAL = ROOT / "compose.yaml", ROOT / "compose.cpu.yaml", ROOT / "compose.local.yaml"
OURS = ("gateway", "web", "reindex", "export")  # the services that run the project's images
IMAGE_VARIABLES = ("T2I_IMAGE", "T2I_TOOLS_IMAGE", "TRITON_IMAGE", "TRITON_CPU_IMAGE", "MILVUS_IMAGE")


def config(*files: Path, **env: str) -> dict[str, Any]:
    """What podman-compose makes of ``files`` (merged in order, variables filled in from ``env``), one-off services included."""
    assert shutil.which("podman"), "podman is missing: 'make containers' (run by 'make test') installs it"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(IMAGE_VARIABLES) and not k.startswith("T2I_")}
    environ.setdefault("CONTAINERS_CONF", str(ROOT / "docker" / "containers.conf"))
    args = [deploy_tool("podman-compose"), *(f"--file={f}" for f in files), "--profile=tools", "config"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**environ, **env}, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(yaml.safe_load(done.stdout))


@pytest.fixture(scope="module")
def gpu() -> dict[str, Any]:
    return config(COMPOSE)


@pytest.fixture(scope="module")
def cpu() -> dict[str, Any]:
    return config(COMPOSE, CPU)


def env_of(compose: dict[str, Any], service: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"][service].get("environment", {}).items()}


def flags(command: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").partition("=")[::2] for arg in command if arg.startswith("--"))


@pytest.fixture(scope="module")
def local() -> dict[str, Any]:
    return config(COMPOSE, CPU, LOCAL)


def test_the_files_and_their_merges_validate_against_the_compose_spec(cpu: dict[str, Any], local: dict[str, Any], tmp_path: Path) -> None:
    merged = [tmp_path / "cpu.yaml", tmp_path / "local.yaml"]
    merged[0].write_text(yaml.safe_dump(cpu))
    merged[1].write_text(yaml.safe_dump(local))
    schema = [deploy_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    checked = subprocess.run([*schema, str(COMPOSE), *map(str, merged)], capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0 and "validation done" in checked.stdout, checked.stdout + checked.stderr


def test_the_local_override_swaps_in_the_images_built_here_and_replaces_whole_healthchecks(cpu: dict[str, Any], local: dict[str, Any]) -> None:
    """compose.local.yaml: the tags docker/build.py gives, a python healthcheck where the upstream image's curl is missing.

    podman-compose appends an override's list to the base one (command, healthcheck test): the merged
    test must be the override's alone.
    """
    listing = subprocess.run([sys.executable, str(ROOT / "docker" / "build.py"), "--print-tags"], capture_output=True, text=True, check=True).stdout
    tags = dict(line.split() for line in listing.splitlines())
    images = {name: s["image"] for name, s in local["services"].items()}
    runtime = tags["runtime"]
    assert images == {"gateway": runtime, "web": runtime, "reindex": runtime, "export": tags["tools"], "triton": tags["triton-cpu"], "milvus": tags["milvus"]}
    overridden = yaml.safe_load(LOCAL.read_text())["services"]
    for name in ("milvus", "triton"):
        test = local["services"][name]["healthcheck"]["test"]
        assert test == overridden[name]["healthcheck"]["test"] and test.startswith("python3 -c") and "curl" not in test, (name, test)
        probe = cpu["services"][name]["healthcheck"]["test"].split()[-1].replace("localhost", "127.0.0.1")
        assert probe in test, (name, probe, test)  # the same URL as the upstream image's check
    assert local["services"]["milvus"]["command"] == ["--data", "/var/lib/milvus", "--authorization-enabled", "true"]
    # Nothing else changes: Triton runs the CPU override's command, and the project's services their own settings.
    assert local["services"]["triton"]["command"] == cpu["services"]["triton"]["command"]
    for name in OURS:
        assert {k: v for k, v in local["services"][name].items() if k != "image"} == {k: v for k, v in cpu["services"][name].items() if k != "image"}, name


def test_triton_takes_a_gpu_and_the_override_runs_it_on_the_cpu(gpu: dict[str, Any], cpu: dict[str, Any]) -> None:
    on_gpu, on_cpu = gpu["services"]["triton"], cpu["services"]["triton"]
    assert on_gpu["deploy"]["resources"]["reservations"]["devices"] == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in on_cpu  # the GPU reservation is gone, not merged with the CPU settings
    gpu_flags, cpu_flags = flags(on_gpu["command"]), flags(on_cpu["command"])
    assert on_gpu["command"][0] == on_cpu["command"][0] == "tritonserver"
    assert cpu_flags == {**gpu_flags, "model-config-name": "cpu", "allow-gpu-metrics": "false"}  # the same server otherwise
    assert "model-config-name" not in gpu_flags and on_cpu["image"] != on_gpu["image"]
    assert all((ROOT / "model_repository" / model / "configs" / "cpu.pbtxt").is_file() for model in ("clip_text", "clip_vision"))
    # Everything but Triton is the same with the override.
    assert {name: s for name, s in gpu["services"].items() if name != "triton"} == {name: s for name, s in cpu["services"].items() if name != "triton"}


def test_every_image_is_a_variable_whose_default_is_the_release_the_manifests_name(gpu: dict[str, Any]) -> None:
    release = only("prod", "Deployment", "t2i-gateway")["spec"]["template"]["spec"]["containers"][0]["image"]
    tools = only("prod", "Job", "t2i-export")["spec"]["template"]["spec"]["containers"][0]["image"]
    triton = only("prod", "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]["image"]
    milvus = only("prod", "Milvus", "milvus")["spec"]["components"]["image"]
    images = {name: s["image"] for name, s in gpu["services"].items()}
    assert images == {"gateway": release, "web": release, "reindex": release, "export": tools, "triton": triton, "milvus": milvus}
    swapped = config(COMPOSE, CPU, T2I_IMAGE="a:1", T2I_TOOLS_IMAGE="b:1", TRITON_CPU_IMAGE="c:1", MILVUS_IMAGE="d:1")
    expected = {"gateway": "a:1", "web": "a:1", "reindex": "a:1", "export": "b:1", "triton": "c:1", "milvus": "d:1"}
    assert {name: s["image"] for name, s in swapped["services"].items()} == expected
    assert config(COMPOSE, TRITON_IMAGE="e:1")["services"]["triton"]["image"] == "e:1"


def test_the_settings_are_real_and_agree_with_the_kubernetes_config(gpu: dict[str, Any]) -> None:
    known = {TOKEN_ENV, TOKEN_FILE_ENV}
    for settings in (Settings, GatewaySettings, WebSettings):
        known |= {f"{settings.model_config['env_prefix']}{field.upper()}" for field in settings.model_fields}
    for name in gpu["services"]:
        unknown = {key for key in env_of(gpu, name) if key.startswith("T2I_")} - known
        assert not unknown, f"{name}: {unknown} are no setting of core/settings.py"
    config_map = only("prod", "ConfigMap", "t2i-config")["data"]
    gateway = env_of(gpu, "gateway")
    shared = set(gateway) & set(config_map) - {"T2I_TRITON_URL", "T2I_MILVUS_URI"}  # service names differ
    assert len(shared) >= 6 and {k: gateway[k] for k in shared} == {k: config_map[k] for k in shared}
    reindex = env_of(gpu, "reindex")
    assert reindex == {k: v for k, v in gateway.items() if k in reindex}
    # The gateway and the reindex reach Triton's and Milvus's services on the ports those listen on.
    triton_host, triton_port = split_address(gateway["T2I_TRITON_URL"])
    assert triton_host == "triton" and triton_port == int(flags(gpu["services"]["triton"]["command"])["grpc-port"])
    assert gateway["T2I_MILVUS_URI"] == "http://milvus:19530"
    # The page: as its Deployment, but asking the gateway service.
    web = env_of(gpu, "web")
    pod = {e["name"]: e["value"] for e in only("prod", "Deployment", "t2i-web")["spec"]["template"]["spec"]["containers"][0]["env"]}
    differ = {"T2I_WEB_GATEWAY", TOKEN_FILE_ENV}  # the gateway's name, and where the secret is mounted
    assert {k: v for k, v in web.items() if k not in differ} == {k: v for k, v in pod.items() if k not in differ}
    assert split_address(web["T2I_WEB_GATEWAY"]) == ("gateway", split_address(gateway["T2I_LISTEN"])[1])
    # Triton runs the manifests' server flags (less the connection age, which only matters behind a headless Service).
    pod_flags = flags(only("prod", "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]["args"])
    assert {k: v for k, v in pod_flags.items() if not k.startswith("grpc-max-connection-age")} == flags(gpu["services"]["triton"]["command"])


def test_tokens_come_from_files(gpu: dict[str, Any]) -> None:
    files = {"T2I_AUTH_TOKENS_FILE": "gateway_tokens", TOKEN_FILE_ENV: "web_token", "T2I_MILVUS_TOKEN_FILE": "milvus_token"}
    used = set()
    for name, service in gpu["services"].items():
        env = env_of(gpu, name)
        assert not {TOKEN_ENV, "T2I_MILVUS_TOKEN"} & set(env), name  # never a token in the environment
        for key, secret in files.items():
            if key in env:
                assert env[key] == f"/run/secrets/{secret}" and secret in service["secrets"], (name, key)
                used.add(secret)
    assert used == set(files.values()) == set(gpu["secrets"])
    assert all(spec["file"].startswith("./secrets/") for spec in gpu["secrets"].values())


def test_the_project_containers_run_as_the_pods_do(gpu: dict[str, Any]) -> None:
    for name in OURS:
        service = gpu["services"][name]
        assert service["user"] == "10001:10001" and service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"] and any(t.startswith("/tmp") for t in service["tmpfs"]), name
    assert {name for name, s in gpu["services"].items() if s.get("profiles")} == {"reindex", "export"}  # one-off: not started by 'up'
    published = [port for s in gpu["services"].values() for port in s.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for port in published)  # loopback unless asked
    assert config(COMPOSE, T2I_PUBLISH_ADDRESS="0.0.0.0")["services"]["web"]["ports"] == ["0.0.0.0:8080:8080"]
    moved = config(COMPOSE, T2I_PUBLISH_GATEWAY_PORT="25051", T2I_PUBLISH_METRICS_PORT="29464", T2I_PUBLISH_WEB_PORT="28080")["services"]
    assert moved["gateway"]["ports"] == ["127.0.0.1:25051:50051", "127.0.0.1:29464:9464"] and moved["web"]["ports"] == ["127.0.0.1:28080:8080"]


def test_the_healthchecks_ask_what_the_probes_ask(gpu: dict[str, Any]) -> None:
    services = gpu["services"]
    web_probe = only("prod", "Deployment", "t2i-web")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    triton_probe = only("prod", "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    assert f"http://127.0.0.1:8080{web_probe}" in " ".join(services["web"]["healthcheck"]["test"])
    assert f"http://localhost:8000{triton_probe}" in services["triton"]["healthcheck"]["test"]
    gateway_check = " ".join(services["gateway"]["healthcheck"]["test"])
    assert "HealthStub" in gateway_check and "HealthCheckRequest()" in gateway_check  # the readiness service "", as the gRPC probe
    compile(services["gateway"]["healthcheck"]["test"][-1], "healthcheck", "exec")  # valid Python
