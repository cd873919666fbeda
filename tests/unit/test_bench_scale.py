"""bench.scale's pieces that need no server: the streamed data, the running exact top-k, the disk check, the config patch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.data import exact_top_k
from bench.scale import RunningTopK, batch_sizes, batch_vectors, centres, check_disk, estimate, make_queries, patch_yaml, recall_at_k


def stream(count: int, batch: int, dim: int = 32) -> list[np.ndarray]:
    middles = centres(dim, 0, 20)
    return [batch_vectors(number, size, dim, 0, middles, 0.6) for number, size in enumerate(batch_sizes(count, batch))]


def test_batches_are_the_same_whichever_batch_a_run_starts_at() -> None:
    first = stream(3000, 1000)
    again = batch_vectors(2, 1000, 32, 0, centres(32, 0, 20), 0.6)
    assert np.array_equal(first[2], again)
    assert not np.array_equal(first[1], first[2])
    assert np.allclose(np.linalg.norm(first[0], axis=1), 1.0, atol=1e-5)


def test_running_top_k_over_batches_equals_exact_search_over_all() -> None:
    batches = stream(2500, 700)  # a short last batch
    queries = make_queries(batches[0], 50, seed=0)
    running, offset = RunningTopK(50), 0
    for batch in batches:
        running.add(queries, batch, offset)
        offset += len(batch)
    assert np.array_equal(running.ids, exact_top_k(np.concatenate(batches), queries, 10))


def test_running_top_k_survives_a_save_and_load(tmp_path: Path) -> None:
    batches = stream(1200, 600)
    queries = make_queries(batches[0], 20, seed=0)
    running = RunningTopK(20)
    running.add(queries, batches[0], 0)
    running.save(tmp_path / "truth.npz")
    resumed = RunningTopK.load(tmp_path / "truth.npz")
    resumed.add(queries, batches[1], 600)
    assert np.array_equal(resumed.ids, exact_top_k(np.concatenate(batches), queries, 10))


def test_recall_counts_shared_ids() -> None:
    truth = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    assert recall_at_k([[1, 2, 3, 4, 5, 11, 12, 13, 14, 15]], truth) == 0.5


def test_the_disk_check_stops_with_the_figures(tmp_path: Path) -> None:
    need = estimate(10_000_000, 512, ["IVF_SQ8"], 64)
    assert need["raw_fp32_gb"] == pytest.approx(20.48)
    with pytest.raises(SystemExit, match=r"not enough disk .* GB needed"):
        check_disk(tmp_path, 1e9)


def test_patch_yaml_enables_disk_indexes_and_mmap_once(tmp_path: Path) -> None:
    config = tmp_path / "milvus.yaml"
    config.write_text(
        "queryNode:\n  loadMemoryUsageFactor: 1\n  enableDisk: false # query node\nindexNode:\n  enableDisk: true\n"
        "dataCoord:\n  segment:\n    maxSize: 512 # Maximum size of a segment in MB\n"
    )
    assert patch_yaml(config, tmp_path / "mmap", 1024)
    text = config.read_text()
    assert "  enableDisk: true # query node" in text
    assert f"queryNode:\n  mmapDirPath: {tmp_path / 'mmap'}\n" in text
    assert "maxSize: 1024" in text
    assert not patch_yaml(config, tmp_path / "mmap", 1024)
