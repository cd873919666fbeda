"""Scale-out with real processes: sharded reindex over a folder and over S3 (moto on loopback),
three gateways under round robin with one killed, and a model upgrade under load.

The module has a stack of its own, with a copy of the tiny model repository: the upgrade adds a
second model version to it, which must not leak into the session's stack.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import grpc
import pytest

from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp, item_hash
from devstack.process import ManagedProcess, free_port
from devstack.stack import LocalStack, gateway_serving, http_ok
from export.main import run_export
from reindex.sources import Source, shard_of
from t2i.client import GatewayClient
from tests.support.images import synthetic_photos
from tests.support.polling import wait_for
from tests.support.reindex_jobs import expected_rows, run_killed_job
from tests.support.stack import GATEWAY_ENV, PROJECT_ROOT, metrics_port, run_t2i, start_gateway

ALIAS = "t2i_scale"
SHARDS = 3


@pytest.fixture(scope="module")
def scale_stack(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    repo = tmp_path_factory.mktemp("scale") / "model_repository"
    shutil.copytree(tiny_repo, repo)
    local = LocalStack(repo, tmp_path_factory.mktemp("scale_stack"), gateway_address="127.0.0.1:0", alias=ALIAS, extra_env=GATEWAY_ENV)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def scale_index(scale_stack: LocalStack) -> Iterator[ImageIndex]:
    direct = ImageIndex(scale_stack.milvus_uri, ALIAS, ModelStamp.of(Manifest.read(scale_stack.repo)), timeout_s=30, token=scale_stack.milvus_token)
    yield direct
    direct.close()


class Load:
    """SearchText in a loop on a thread, recording every answer's (collection, model_id) and every error."""

    def __init__(self, client: GatewayClient, query: str = "noise") -> None:
        self.client, self.query = client, query
        self.answers: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                response = self.client.search_text(self.query, top_k=3)
                self.answers.append((response.collection, response.model_id))
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code()}: {exc.details()}")
            time.sleep(0.01)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def run_shards(stack: LocalStack, location: str, run_id: str, extra_env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess[str]]:
    """The Indexed Job's pods as local processes: ``JOB_COMPLETION_INDEX`` 0..SHARDS-1, all at once."""
    env = {**os.environ, **stack.env(), **GATEWAY_ENV, **(extra_env or {})}
    argv = [sys.executable, "-m", "t2i.cli", "reindex", location, "--run-id", run_id, "--shards", str(SHARDS), "--workers", "1", "--no-progress"]
    procs = [
        subprocess.Popen(argv, env={**env, "JOB_COMPLETION_INDEX": str(i)}, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(SHARDS)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_sharded_reindex_over_a_folder_with_a_killed_shard(scale_stack: LocalStack, scale_index: ImageIndex, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    synthetic_photos(folder, 45, seed=5)
    assert run_t2i(scale_stack, "reindex", str(folder), "--full", "--no-progress").returncode == 0
    client = GatewayClient(scale_stack.gateway_address, timeout_s=20, token=scale_stack.token("write"))
    before = client.info().collection
    synthetic_photos(folder, 60, seed=6)  # 15 new files, 45 changed
    counts = Counter(shard_of(f.id, SHARDS) for f in Source(str(folder)).list())
    assert sorted(counts) == [0, 1, 2] and sum(counts.values()) == 60  # every shard has work
    env = {**os.environ, **scale_stack.env(), **GATEWAY_ENV, "JOB_COMPLETION_INDEX": "1"}
    with Load(client) as load:
        # Shard 1 is SIGKILLed after its first batch of 4 rows is in the run's collection ...
        run_killed_job([str(folder), "4", "--run-id", "nightly-1", "--shards", str(SHARDS)], env, tmp_path / "killed.log")
        run_collection = scale_index.run_collection("nightly-1", create=False)
        assert 4 <= len(scale_index.hashes(run_collection)) < counts[1]
        # ... then all three run (shard 1 again), and the final step verifies and swaps.
        results = run_shards(scale_stack, str(folder), "nightly-1")
        assert [r.returncode for r in results] == [0, 0, 0], [r.stderr[-500:] for r in results]
        files = [re.search(r"(\d+) files", r.stdout) for r in results]  # "shard i/3: ... N files, ..."
        assert [int(found.group(1)) if found else None for found in files] == [counts[i] for i in range(SHARDS)], [r.stdout for r in results]
        assert client.info().collection == before  # nothing swapped before finalize
        final = run_t2i(scale_stack, "finalize", str(folder), "--run-id", "nightly-1")
        assert final.returncode == 0, final.stderr
        wait_for(lambda: load.answers[-1][0] == run_collection, 10, "searches from the new collection")
    assert load.errors == [] and len(load.answers) > 10
    assert client.info().collection == run_collection and scale_index.previous_collection() == before
    assert scale_index.hashes(run_collection) == expected_rows(folder)  # exactly the listing: nothing lost, nothing twice
    again = run_t2i(scale_stack, "finalize", str(folder), "--run-id", "nightly-1")  # a retried finalize changes nothing
    assert again.returncode == 0, again.stderr
    assert scale_index.active_collection() == run_collection and scale_index.previous_collection() == before
    client.close()


def test_finalize_refuses_an_incomplete_run(scale_stack: LocalStack, scale_index: ImageIndex, tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    synthetic_photos(folder, 12, seed=7)
    active = scale_index.active_collection()
    env = {**os.environ, **scale_stack.env(), **GATEWAY_ENV}
    argv = [sys.executable, "-m", "t2i.cli", "reindex", str(folder), "--run-id", "partial", "--shards", "2", "--shard-index", "0", "--no-progress"]
    assert subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, timeout=300).returncode == 0  # shard 1 never ran
    refused = run_t2i(scale_stack, "finalize", str(folder), "--run-id", "partial")
    assert refused.returncode == 2 and "rerun the failed shards" in refused.stderr and "nothing swapped" in refused.stderr
    assert scale_index.active_collection() == active
    missing = run_t2i(scale_stack, "finalize", str(folder), "--run-id", "never-ran")
    assert missing.returncode == 2 and "has no collection" in missing.stderr
    scale_index.drop(scale_index.run_collection("partial", create=False))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3 endpoint on loopback: moto in server mode, with dummy credentials."""
    port = free_port()
    server = ManagedProcess(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], tmp_path_factory.mktemp("moto") / "moto.log"
    ).start()
    try:
        server.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/data.json"), 60, "answering")
        yield {
            "T2I_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        server.stop(timeout_s=5)


def test_sharded_reindex_over_s3(scale_stack: LocalStack, scale_index: ImageIndex, s3: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    synthetic_photos(folder, 24, seed=8)
    (folder / "odd" / "notes.txt").write_text("not an image")
    bucket = boto3.client("s3", endpoint_url=s3["T2I_S3_ENDPOINT_URL"], aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    bucket.create_bucket(Bucket="photos")
    for path in folder.rglob("*"):
        if path.is_file():
            bucket.upload_file(str(path), "photos", f"catalog/2026/{path.relative_to(folder).as_posix()}")
    results = run_shards(scale_stack, "s3://photos/catalog/2026", "s3-run", extra_env=s3)
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr[-500:] for r in results]
    env_before = dict(os.environ)
    os.environ.update(s3)
    try:
        final = run_t2i(scale_stack, "finalize", "s3://photos/catalog/2026", "--run-id", "s3-run")
        assert final.returncode == 0, final.stderr
        source = Source("s3://photos/catalog/2026")
        files = source.list()
        local = expected_rows(folder)
        # Ids are the keys relative to the prefix, as for folders; uris are s3:// addresses.
        assert sorted(f.id for f in files) == sorted(local) and all(f.uri == f"s3://photos/catalog/2026/{f.id}" for f in files)
        stored = scale_index.hashes(scale_index.active_collection() or "")
        assert sorted(stored) == sorted(local)
        assert all(stored[f.id] == item_hash(source.read(f, 1 << 30), f.uri, f.labels, f.modified_time) for f in files)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    client = GatewayClient(scale_stack.gateway_address, timeout_s=20, token=scale_stack.token("write"))
    wait_for(lambda: client.search_text("noise", top_k=30).model_id != "", 10, "searches")
    hits = client.search_text("noise", top_k=30).hits
    assert len(hits) == 24 and all(h.uri.startswith("s3://photos/catalog/2026/") and h.labels[0] in ("even", "odd") for h in hits)
    client.close()


def metric(port: int, method: str) -> float:
    """The gateway's ``t2i_requests_total`` for ``method`` (its OK answers)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    prefix = f't2i_requests_total{{code="OK",method="{method}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_three_gateways_round_robin_and_a_kill(scale_stack: LocalStack, tmp_path: Path) -> None:
    gateways = []
    try:
        for n in range(2):  # two more beside the stack's own, on port 0 (the metrics port is chosen: 0 would turn it off)
            env = {**os.environ, **scale_stack.env(), **GATEWAY_ENV}
            process = start_gateway(f"gateway{n + 2}", env, tmp_path / f"gateway{n + 2}.log", metrics=True)
            assert process.address is not None
            gateways.append((process.address, metrics_port(process), process))
        for address, _, process in gateways:
            process.wait_until(functools.partial(gateway_serving, address), 60, "SERVING")
        all_three = [(scale_stack.gateway_address, scale_stack.metrics_port), *[(a, m) for a, m, _ in gateways]]
        before = [metric(port, "SearchText") for _, port in all_three]
        client = GatewayClient("ipv4:" + ",".join(address for address, _ in all_three), timeout_s=20, token=scale_stack.token("read"))
        with Load(client) as load:
            wait_for(lambda: len(load.answers) >= 60, 60, "60 answers")
            spread = [metric(port, "SearchText") - b for (_, port), b in zip(all_three, before, strict=True)]
            gateways[-1][2].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]  # started above
            killed_at = len(load.answers)
            wait_for(lambda: len(load.answers) >= killed_at + 60, 60, "60 answers after the kill")
        assert load.errors == []
        assert all(count >= 10 for count in spread), spread  # every gateway took its share
        survivors = [metric(port, "SearchText") for _, port in all_three[:2]]
        assert all(after > b for after, b in zip(survivors, before[:2], strict=True))
        client.close()
    finally:
        for _, _, process in gateways:
            process.stop()


def test_model_upgrade_under_load_has_zero_errors(scale_stack: LocalStack, scale_index: ImageIndex, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    synthetic_photos(folder, 20, seed=9)
    assert run_t2i(scale_stack, "reindex", str(folder), "--full", "--no-progress").returncode == 0
    client = GatewayClient(scale_stack.gateway_address, timeout_s=20, token=scale_stack.token("write"))
    v1 = client.info()
    assert v1.model_id == "random:tiny"
    with Load(client) as load:
        wait_for(lambda: len(load.answers) >= 10, 30, "answers from version 1")
        # v2: other random weights, exported beside v1 into the repository Triton serves, and loaded.
        run_export("tiny@1", scale_stack.repo, version=2)
        reload = run_t2i(scale_stack, "models", "reload")
        assert reload.returncode == 0 and "version 2: random:tiny@1" in reload.stdout, reload.stderr
        full = run_t2i(scale_stack, "reindex", str(folder), "--full", "--drop-previous", "--no-progress")
        assert full.returncode == 0, full.stderr
        v2 = client.info()
        assert v2.model_id == "random:tiny@1" and v2.collection != v1.collection
        wait_for(lambda: load.answers[-1] == (v2.collection, "random:tiny@1"), 10, "answers from version 2")
        answered = len(load.answers)
        wait_for(lambda: len(load.answers) >= answered + 10, 30, "more answers from version 2")
        # Nothing uses version 1 any more: prune deletes its folders and Triton unloads it.
        pruned = run_t2i(scale_stack, "models", "prune")
        assert pruned.returncode == 0 and "pruned versions [1]" in pruned.stdout, pruned.stderr + pruned.stdout
        answered = len(load.answers)
        wait_for(lambda: len(load.answers) >= answered + 10, 30, "answers after the prune")
    assert load.errors == []
    by_collection = {v1.collection: "random:tiny", v2.collection: "random:tiny@1"}
    assert all(by_collection[collection] == model for collection, model in load.answers)  # never a query compared across models
    assert {model for _, model in load.answers} == {"random:tiny", "random:tiny@1"}
    assert not (scale_stack.repo / "clip_text" / "1").exists()
    with urllib.request.urlopen(f"http://127.0.0.1:{scale_stack.triton_ports.http}/v2/models/clip_text/versions/2/ready", timeout=5) as ready:  # type: ignore[union-attr]
        assert ready.status == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{scale_stack.triton_ports.http}/v2/models/clip_text/versions/1/ready", timeout=5)  # type: ignore[union-attr]
    client.close()
