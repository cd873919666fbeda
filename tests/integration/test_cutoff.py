"""The calibrated cut-off end to end: the tiny random CLIP served by the real stack, ``t2i eval
--calibrate`` on judged queries, the threshold in the manifest, and CUTOFF_CALIBRATED searches that
return only the hits above it once the gateway's catalog has rescanned the repository.

The session's Milvus and Triton serve it: a copy of the session's export (the calibration goes into
its manifest, not the session's) behind a gateway of the test's own, on an alias of its own.

Random weights rank nothing right, so the judgements are planted from the model's own ranking: for
each query, its top 3 of 20 uncut hits are the relevant ones, so the picker has something to pick
and the threshold cuts. The test checks the plumbing (the threshold written, served after the
rescan, and applied exactly), not the cut's quality: random weights have none to show. (Training a
model for real judgements took over 10 minutes on the loaded 2-core machine here.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from core.manifest import Manifest
from devstack.stack import LocalStack
from relevance.evaluation import load_queries
from relevance.shapes import generate
from t2i.client import GatewayClient
from tests.support.shared_stack import on_stack
from tests.support.stack import GATEWAY_ENV, PROJECT_ROOT, run_t2i
from text2image.v1 import text2image_pb2 as pb

DEPTH, RELEVANT, QUERIES = 20, 3, 24


def t2i(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "t2i.cli", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _planted(client: GatewayClient, source: Path, out: Path) -> list[str]:
    """A queries file whose relevant ids are each query's top ``RELEVANT`` uncut hits; the query texts."""
    texts = [query.text for query in load_queries(source)][:QUERIES]
    lines = []
    for text in texts:
        hits = client.search_text(text, top_k=DEPTH).hits
        lines.append(json.dumps({"query": text, "relevant": [hit.id for hit in hits[:RELEVANT]]}))
    out.write_text("\n".join(lines) + "\n")
    return texts


def _calibrated_search(client: GatewayClient, query: str, deadline_s: float = 20) -> pb.SearchResponse:
    """A CUTOFF_CALIBRATED search, retried while the gateway has not rescanned the repository yet."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return client.search_text(query, top_k=50, cutoff=pb.CUTOFF_CALIBRATED)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_calibrate_then_calibrated_searches_keep_only_hits_above_the_threshold(stack: LocalStack, tiny_repo: Path, tmp_path: Path) -> None:
    repo, evaluation = tmp_path / "repo", tmp_path / "eval"
    shutil.copytree(tiny_repo, repo)  # the session's export, with a manifest of its own for the calibration
    generate(evaluation, 96, seed=2)
    with on_stack(stack, "t2i_cutoff", tmp_path / "stack", repo=repo, extra_env=GATEWAY_ENV) as cutoff:
        indexed = t2i("reindex", str(evaluation / "images"), env={**os.environ, **cutoff.env(), "T2I_TOKEN": cutoff.token("write")})
        assert indexed.returncode == 0, indexed.stderr[-2000:]
        client = GatewayClient(cutoff.gateway_address, timeout_s=20, token=cutoff.token("read"))
        with pytest.raises(grpc.RpcError) as refused:
            client.search_text("a red circle", top_k=10, cutoff=pb.CUTOFF_CALIBRATED)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "t2i eval --calibrate" in (refused.value.details() or "")

        texts = _planted(client, evaluation / "queries.jsonl", tmp_path / "planted.jsonl")
        out = tmp_path / "report"
        args = ("--queries", str(tmp_path / "planted.jsonl"), "--depth", str(DEPTH), "--out", str(out))
        ran = run_t2i(cutoff, "eval", *args, "--calibrate", "--model-repo", str(repo))
        assert ran.returncode == 0, ran.stderr[-2000:]
        print(ran.stdout)
        found = json.loads((out / "calibration.json").read_text())
        threshold = found["calibration"]["threshold"]
        written = Manifest.read(repo).calibration_for("text")
        assert written is not None and written.threshold == threshold and written.queries == QUERIES // 2

        dropped = 0
        for text in texts:
            cut = _calibrated_search(client, text)
            uncut = client.search_text(text, top_k=50)
            assert cut.cutoff == pb.CUTOFF_CALIBRATED and cut.cutoff_score == pytest.approx(threshold, abs=1e-6)
            assert all(hit.score >= threshold for hit in cut.hits)
            assert [h.id for h in cut.hits] == [h.id for h in uncut.hits if h.score >= threshold]
            assert cut.cutoff_dropped == len(uncut.hits) - len(cut.hits)
            dropped += cut.cutoff_dropped
        autocut = client.search_text(texts[0], top_k=50, cutoff=pb.CUTOFF_AUTOCUT)
        assert autocut.cutoff == pb.CUTOFF_AUTOCUT and len(autocut.hits) + autocut.cutoff_dropped == 50
        client.close()
    assert dropped > 0  # the threshold cuts something: the test is not vacuous
    held_out = found["held_out"]
    assert found["calibration"]["held_out_queries"] == QUERIES // 2
    assert held_out["none"]["precision"] == pytest.approx(RELEVANT / DEPTH)
    # Measured, not judged: with random weights each query's scores sit at an offset of their own, so one
    # threshold for all queries does not beat chance on held-out ones (seen: precision 0.15 against
    # 0.15 uncut, recall 0.42; autocut 0.49 and 0.50). The cut-off's quality is measured on a trained model.
    assert 0 < held_out["calibrated"]["kept"] < held_out["none"]["kept"] == (QUERIES // 2) * DEPTH
    assert 0 < held_out["calibrated"]["recall"] < 1 and 0 <= held_out["autocut"]["precision"] <= 1
