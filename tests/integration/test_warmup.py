"""Warm before ready on the real stack: Triton loads the export's model_warmup and runs it, the gateway warms before SERVING."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path

import pytest

from core.manifest import TEXT_MODEL, VISION_MODEL, Manifest
from devstack.process import ProcessFailed
from devstack.stack import LocalStack
from devstack.triton import start_triton
from export.warmup import max_batch_size, warmup_block
from tests.support.polling import wait_for


def served_config(stack: LocalStack, model: str) -> dict:
    assert stack.triton_ports
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.triton_ports.http}/v2/models/{model}/config", timeout=10) as response:
        return dict(json.loads(response.read()))


def start_and_stop(repo: Path, work: Path) -> None:
    process, _ = start_triton(repo, work, timeout_s=120)
    process.stop()


@pytest.mark.parametrize("model", [TEXT_MODEL, VISION_MODEL])
def test_triton_serves_the_warmup_the_export_wrote(stack: LocalStack, tiny_repo: Path, model: str) -> None:
    config_text = (tiny_repo / model / "configs" / "cpu.pbtxt").read_text()
    want = re.findall(r'name: "([^"]+)" batch_size: (\d+)', warmup_block(model, [Manifest.read(tiny_repo)], max_batch_size(config_text), cpu=True))
    served = served_config(stack, model)
    assert want and [(w["name"], str(w["batch_size"])) for w in served["model_warmup"]] == want  # loaded (ready) with these samples run


def test_a_sample_the_model_cannot_run_fails_its_load(tiny_repo: Path, tmp_path: Path) -> None:
    # Triton runs the samples while it loads the model: one past the context length (78 tokens) makes the load fail.
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo, copy_function=lambda src, dst: Path(dst).hardlink_to(src) if src.endswith(".onnx") else shutil.copy2(src, dst))
    config = repo / TEXT_MODEL / "configs" / "cpu.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 77 ]", "dims: [ 78 ]"))
    # Triton either reports the failed warm-up or dies in it (seen here about 1 start in 8: SIGSEGV right after
    # onnxruntime refused the sample, before the model could log it); either way its log shows the sample of 78 tokens,
    # which only the warm-up sends (the model's own line, or onnxruntime's "77 by 78").
    with pytest.raises(ProcessFailed):
        start_and_stop(repo, tmp_path / "triton")
    log = "\n".join(path.read_text(errors="replace") for path in (tmp_path / "triton").rglob("*.log"))
    assert re.search(r"(?i)warm.*fail|input_ids int64\[1, 78\]|77 by 78", log), log[-3000:]


def test_the_gateway_warmed_up_before_serving(stack: LocalStack) -> None:
    log = stack.data_dir / "gateway.log"

    def messages() -> list[str]:
        return [str(json.loads(line).get("msg", "")) for line in log.read_text().splitlines() if line.startswith("{")]

    # The session's stack starts with nothing indexed: the encode ran before SERVING, the search once the collection was made.
    wait_for(lambda: any(m.startswith("warm-up: first search of ") for m in messages()), 60, "the warm-up's search")
    found = messages()
    encode = next(i for i, m in enumerate(found) if m.startswith("warm-up: first text encode"))
    serving = found.index("readiness: SERVING")
    assert encode < serving
