"""The metric names of the alerts and the dashboard (k8s/monitoring) on live servers: the gateway's metrics
endpoint, and Triton's (the 2.51 server of the nvidia-pytriton wheel, the release of the production image).

The unit tests check the names against the gateway's registry and the documented lists
(``tests/unit/upstream_metrics.yaml``); this checks that the running processes expose them, with the
labels the queries select on. Milvus's metrics port is inside the local Milvus's network namespace,
so its names rest on Milvus's documentation alone.
"""

from __future__ import annotations

import io
import re
import urllib.request

import grpc
import pytest
from PIL import Image

from devstack.stack import LocalStack
from t2i.client import GatewayClient
from tests.support.monitoring import metric_names, queries, rules
from tests.support.stack import assert_serving
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of ``http://127.0.0.1:port/metrics``, by series name as Prometheus stores it.

    (Not prometheus_client's parser: it renames a counter's samples to ``*_total``, which Prometheus
    does not do to Triton's ``nv_inference_request_success``.)
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?", line.strip()):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            samples.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return samples


def used() -> set[str]:
    return set().union(*(metric_names(rule["expr"]) for rule in rules()), *(metric_names(expr) for _, expr in queries()))


def test_the_live_gateway_and_triton_expose_the_names_the_monitoring_queries(stack: LocalStack, client: GatewayClient) -> None:
    assert_serving(stack)
    client.search_text("monitoring probe", top_k=3)  # Triton clip_text, Milvus search
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(picture, format="PNG")
    client.search_image(top_k=3, image=picture.getvalue())  # Triton clip_vision
    with grpc.insecure_channel(stack.gateway_address) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.SearchServiceStub(channel).SearchText(pb.SearchTextRequest(query="no token", top_k=1), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # an auth refusal, counted

    gateway = scrape(stack.metrics_port)
    assert [value for _, value in gateway["t2i_ready"]] == [1.0]
    ours = {name for name in used() if name.startswith("t2i_")}
    assert len(ours) >= 8
    assert ours - set(gateway) <= {"t2i_shed_total"}  # nothing need have been shed (tests/unit/test_admission.py counts it)
    assert {labels["target"] for labels, _ in gateway["t2i_downstream_seconds_bucket"]} == {"triton", "milvus"}

    triton = scrape(stack.triton_ports.metrics)  # type: ignore[union-attr]  # started
    theirs = {name for name in used() if name.startswith("nv_")}
    gpu = {name for name in theirs if name.startswith("nv_gpu_")}  # GPU metrics are off on a CPU server
    assert len(theirs - gpu) >= 6 and theirs - gpu - set(triton) == set()
    for name in ("nv_inference_queue_duration_us", "nv_inference_request_success", "nv_inference_compute_infer_duration_us"):
        served = {labels["model"]: value for labels, value in triton[name]}
        assert {"clip_text", "clip_vision"} <= set(served), name  # the models the alert's model=~ names
    assert {labels["model"]: value for labels, value in triton["nv_inference_request_success"]}["clip_vision"] >= 1
