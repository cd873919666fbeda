"""The relevance cut-off: the autocut rule on planted scores, the calibration picker on planted judgements,
the manifest's calibration field, the catalog picking a written threshold up, and the gateway and the
page over real gRPC on the fake Milvus and Triton."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from core.manifest import MANIFEST_FILE, TEXT_MODEL, VISION_MODEL, Calibration, Manifest, write_calibration
from core.records import Hit
from gateway.errors import ErrorMappingInterceptor
from gateway.servicers import SearchServicer
from relevance.calibration import JudgedHits, cut_quality, pick_threshold, split
from search.cutoff import Cutoff, apply_cutoff, autocut
from tests.support.engine import Parts
from tests.support.servers import real_server
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc

QUERY = (0.6, 0.8)  # the fake Triton's vector (3, 4), normalized: every query embeds to it


# -- autocut ------------------------------------------------------------------------------------------


def test_autocut_cuts_after_a_clear_cliff() -> None:
    assert autocut([0.30, 0.295, 0.29, 0.22, 0.218, 0.215, 0.21, 0.208]) == 3


def test_autocut_keeps_a_ranking_without_a_cliff() -> None:
    assert autocut([0.30 - 0.01 * i for i in range(10)]) == 10  # even spacing
    assert autocut([0.30 - 0.01 * i - 0.0005 * i * i for i in range(10)]) == 10  # gently steepening: no gap 3x the median


def test_autocut_with_ties_cuts_only_at_a_real_drop() -> None:
    assert autocut([0.3, 0.3, 0.3, 0.1, 0.1, 0.1]) == 3  # median gap 0: the drop still has to be a share of the range
    assert autocut([0.3, 0.3, 0.3000001, 0.3, 0.3]) == 5  # rounding-sized steps are no jump


def test_autocut_of_equal_scores_and_short_rankings_keeps_them_all() -> None:
    assert autocut([0.25] * 7) == 7
    assert autocut([0.9]) == 1
    assert autocut([0.9, 0.1]) == 2  # two scores: no spacing to compare the gap with
    assert autocut([]) == 0


def test_autocut_keeps_at_least_one_hit_and_cuts_at_the_first_jump() -> None:
    assert autocut([0.9, 0.3, 0.29, 0.28, 0.27]) == 1
    assert autocut([0.9, 0.89, 0.5, 0.49, 0.1, 0.09]) == 2  # two cliffs: the first one


def test_autocut_cuts_a_three_hit_ranking_against_its_other_gap() -> None:
    assert autocut([0.9, 0.3, 0.29]) == 1  # the median of all two gaps was their mean: 0.6 >= 3 x 0.305 could never hold
    assert autocut([0.9, 0.3, 0.29, 0.28]) == 1
    assert autocut([0.9, 0.89, 0.3]) == 2
    assert autocut([0.5, 0.4, 0.35]) == 3  # 0.1 is under 3 x 0.05: no jump


def test_apply_cutoff_reports_what_it_kept_and_the_score_needed() -> None:
    hits = [Hit(str(i), "", score, []) for i, score in enumerate([0.5, 0.49, 0.48, 0.2, 0.19])]
    auto = apply_cutoff(hits, Cutoff.AUTOCUT)
    assert [h.id for h in auto.hits] == ["0", "1", "2"] and auto.score == 0.48 and auto.dropped == 2
    calibrated = apply_cutoff(hits, Cutoff.CALIBRATED, 0.485)
    assert [h.id for h in calibrated.hits] == ["0", "1"] and calibrated.score == 0.485 and calibrated.dropped == 3
    assert apply_cutoff(hits, Cutoff.NONE).hits == hits and apply_cutoff(hits, Cutoff.NONE).score is None
    flat = apply_cutoff(hits[:3], Cutoff.AUTOCUT)
    assert flat.hits == hits[:3] and flat.score is None and flat.dropped == 0


# -- the calibration picker ---------------------------------------------------------------------------


def test_a_clean_separation_gives_the_midpoint_and_f1_one() -> None:
    queries = [JudgedHits([0.9, 0.8, 0.3, 0.2], [True, True, False, False]), JudgedHits([0.7, 0.5, 0.1], [True, False, False])]
    picked = pick_threshold(queries)
    assert picked.threshold == pytest.approx(0.6)  # between the lowest relevant (0.7) and the highest irrelevant (0.5)
    assert (picked.precision, picked.recall, picked.f1) == (1.0, 1.0, 1.0)


def test_overlapping_scores_pick_the_best_f1_or_the_best_recall_at_a_precision() -> None:
    # Pooled, best first: 0.9 R, 0.8 R, 0.7 R, 0.6 N, 0.5 N, 0.4 R, 0.3 N, 0.2 N (R relevant, N not; 4 relevant).
    queries = [JudgedHits([0.9, 0.8, 0.6, 0.3], [True, True, False, False]), JudgedHits([0.7, 0.5, 0.4, 0.2], [True, False, True, False])]
    best = pick_threshold(queries)  # keeping 3: P 1, R 3/4, F1 6/7, the best of the eight cuts
    assert best.threshold == pytest.approx(0.65) and best.f1 == pytest.approx(6 / 7) and (best.precision, best.recall) == (1.0, 0.75)
    assert best.f1 == pytest.approx(max(cut_quality(queries, t).f1 for t in (0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.2)))
    precise = pick_threshold(queries, target_precision=0.6)  # keeping 6: P 4/6 >= 0.6 with recall 1
    assert precise.threshold == pytest.approx(0.35) and precise.recall == 1.0 and precise.precision == pytest.approx(4 / 6)
    assert pick_threshold(queries, target_precision=0.75).threshold == pytest.approx(0.65)  # keep 3 and keep 4 tie on recall: the higher
    with pytest.raises(ValueError, match=r"no threshold reaches precision 0\.9"):
        pick_threshold([JudgedHits([0.9, 0.8], [False, True])], target_precision=0.9)


def test_ties_pick_the_higher_threshold_and_the_split_is_even_odd() -> None:
    queries = [JudgedHits([0.5, 0.5, 0.4], [True, True, True])]
    assert pick_threshold(queries).threshold == 0.4  # keep all: F1 1 only there
    assert pick_threshold([JudgedHits([0.5, 0.4, 0.3], [True, False, False])]).threshold == pytest.approx(0.45)
    assert split(5) == ([0, 2, 4], [1, 3])
    with pytest.raises(ValueError, match="no hits"):
        pick_threshold([JudgedHits([], [])])


def test_calibration_without_a_relevant_hit_is_refused_with_what_to_check() -> None:
    unjudged = [JudgedHits([0.9, 0.5], [False, False]), JudgedHits([0.7], [False])]
    for target in (None, 0.5):
        with pytest.raises(ValueError, match=r"none of the 2 calibration queries' hits is judged relevant: do the ids in --queries match"):
            pick_threshold(unjudged, target)


# -- the manifest --------------------------------------------------------------------------------------


def _repo(tmp_path: Path, with_copies: bool = True) -> Path:
    manifest = Manifest("unit:model", "c" * 64, 2, "fp32", 77, 224, True, version=3)
    for model in (TEXT_MODEL, VISION_MODEL):
        manifest.version_dir(tmp_path, model).mkdir(parents=True)
    if with_copies:
        manifest.write_versioned(tmp_path)
    else:
        manifest.write(tmp_path)
    return tmp_path


def test_an_old_manifest_without_calibration_still_reads(tmp_path: Path) -> None:
    old = {"model_id": "m", "checksum": "c" * 64, "dimension": 2, "precision": "fp32", "context_length": 77, "image_size": 224, "random_weights": True}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(old))
    manifest = Manifest.read(tmp_path)
    assert manifest.calibration == {} and manifest.calibration_for("text") is None


@pytest.mark.parametrize("with_copies", [True, False])
def test_a_written_calibration_round_trips_through_every_copy(tmp_path: Path, with_copies: bool) -> None:
    repo = _repo(tmp_path, with_copies)
    calibration = Calibration(0.2512, "f1", 0.8, 0.7, 0.7467, 24, 0.75, 0.69, 24, 100, "2026-12-01T20:00:00Z")
    files = write_calibration(repo, 3, "text", calibration)
    assert repo / MANIFEST_FILE in files and len(files) == (3 if with_copies else 1)
    assert Manifest.read(repo).calibration_for("text") == calibration
    assert Manifest.read_version(repo, 3).calibration_for("text") == calibration
    assert Manifest.read(repo).calibration_for("image") is None
    assert not list(repo.rglob("*.tmp"))
    raw = json.loads((repo / MANIFEST_FILE).read_text())
    raw["calibration"]["text"]["from_a_newer_writer"] = 1
    assert Calibration.from_dict(raw["calibration"]["text"]) == calibration


# -- the catalog and the gateway -------------------------------------------------------------------------


def _at(score: float) -> list[float]:
    """A stored vector whose cosine with the fake query vector is ``score``."""
    side = math.sqrt(1 - score * score)
    return [score * QUERY[0] - side * QUERY[1], score * QUERY[1] + side * QUERY[0]]


SCORES = {"a": 0.9, "b": 0.88, "c": 0.87, "d": 0.5, "e": 0.49, "f": 0.48, "g": 0.47}
CALIBRATION = Calibration(0.6, "f1", 1.0, 1.0, 1.0, 4, 1.0, 1.0, 4, 10, "2026-12-01T20:00:00Z")


@pytest.fixture()
async def gateway(model_repo: Path, tmp_path: Path) -> AsyncIterator[tuple[str, Parts, Path]]:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    parts = Parts(repo)
    parts.milvus.add("c1", parts.stamp.describe(), {i: {"uri": f"mem://{i}", "vector": _at(s)} for i, s in SCORES.items()})
    parts.milvus.aliases["alias"] = "c1"

    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(parts.engine, 10), server)

    async with real_server([ErrorMappingInterceptor()], register) as address:
        yield address, parts, repo
    await parts.engine.close()


async def test_the_catalog_serves_a_threshold_written_after_start(model_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    parts = Parts(repo)
    try:
        assert parts.models.newest.manifest.calibration_for("text") is None
        write_calibration(repo, 1, "text", CALIBRATION)
        await parts.models.rescan()  # what the background task does every RESCAN_S
        assert parts.models.for_stamp(parts.stamp) is parts.models.newest
        assert parts.models.newest.manifest.calibration_for("text") == CALIBRATION
    finally:
        await parts.engine.close()


async def test_a_changed_manifest_that_cannot_be_rebuilt_keeps_the_previous_encoder(model_repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from core.manifest import TOKENIZER_FILE

    repo = tmp_path / "repo"
    shutil.copytree(model_repo, repo)
    parts = Parts(repo)
    try:
        served = parts.models.newest
        tokenizer = served.manifest.version_dir(repo, TEXT_MODEL) / TOKENIZER_FILE
        whole = tokenizer.read_bytes()
        write_calibration(repo, 1, "text", CALIBRATION)
        tokenizer.write_bytes(whole[: len(whole) // 2])  # mid-write
        with caplog.at_level("INFO", logger="inference.models"):
            await parts.models.rescan()
            await parts.models.rescan()
        assert parts.models.for_stamp(parts.stamp) is served and served.manifest.calibration_for("text") is None
        kept = [r.getMessage() for r in caplog.records if "kept the previous encoder of version 1" in r.getMessage()]
        assert len(kept) == 1, caplog.text  # logged once, not at every scan
        assert "is not served" not in caplog.text and 1 not in parts.models._broken
        tokenizer.write_bytes(whole)
        await parts.models.rescan()
        assert parts.models.newest is not served and parts.models.newest.manifest.calibration_for("text") == CALIBRATION
    finally:
        await parts.engine.close()


async def test_search_text_cutoffs_over_grpc(gateway: tuple[str, Parts, Path]) -> None:
    address, parts, repo = gateway
    async with grpc.aio.insecure_channel(address) as channel:
        search = pb_grpc.SearchServiceStub(channel)
        plain = await search.SearchText(pb.SearchTextRequest(query="a dog", top_k=7))
        assert len(plain.hits) == 7 and plain.cutoff == pb.CUTOFF_NONE and not plain.HasField("cutoff_score")
        auto = await search.SearchText(pb.SearchTextRequest(query="a dog", top_k=7, cutoff=pb.CUTOFF_AUTOCUT))
        assert [h.id for h in auto.hits] == ["a", "b", "c"] and auto.cutoff == pb.CUTOFF_AUTOCUT and auto.cutoff_dropped == 4
        assert auto.cutoff_score == pytest.approx(0.87, abs=1e-5)
        both = await search.SearchText(pb.SearchTextRequest(query="a dog", top_k=7, min_score=0.885, cutoff=pb.CUTOFF_AUTOCUT))
        assert [h.id for h in both.hits] == ["a"]  # min_score still applies
        calls = parts.triton.calls
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await search.SearchText(pb.SearchTextRequest(query="a dog", top_k=7, cutoff=pb.CUTOFF_CALIBRATED))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no calibrated threshold" in (refused.value.details() or "") and "t2i eval --calibrate" in (refused.value.details() or "")
        assert parts.triton.calls == calls  # refused before any encoding
        write_calibration(repo, 1, "text", CALIBRATION)
        await parts.models.rescan()
        cut = await search.SearchText(pb.SearchTextRequest(query="a new query", top_k=7, cutoff=pb.CUTOFF_CALIBRATED))
        assert [h.id for h in cut.hits] == ["a", "b", "c"] and all(h.score >= 0.6 for h in cut.hits)
        assert cut.cutoff == pb.CUTOFF_CALIBRATED and cut.cutoff_score == pytest.approx(0.6) and cut.cutoff_dropped == 4


async def test_search_image_cutoffs_and_bad_values_over_grpc(gateway: tuple[str, Parts, Path]) -> None:
    address, parts, repo = gateway
    async with grpc.aio.insecure_channel(address) as channel:
        search = pb_grpc.SearchServiceStub(channel)
        similar = await search.SearchImage(pb.SearchImageRequest(id="d", top_k=6, exclude_self=True, cutoff=pb.CUTOFF_AUTOCUT))
        assert similar.cutoff == pb.CUTOFF_AUTOCUT and len(similar.hits) + similar.cutoff_dropped == 6
        write_calibration(repo, 1, "text", CALIBRATION)
        await parts.models.rescan()
        with pytest.raises(grpc.aio.AioRpcError) as text_only:
            await search.SearchImage(pb.SearchImageRequest(id="a", top_k=3, cutoff=pb.CUTOFF_CALIBRATED))
        assert text_only.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "text queries only" in (text_only.value.details() or "")
        unknown_value = cast(pb.Cutoff, 9)  # a value this server does not know (a newer client's)
        for call in (
            search.SearchText(pb.SearchTextRequest(query="a dog", top_k=3, cutoff=unknown_value)),
            search.SearchImage(pb.SearchImageRequest(id="a", top_k=3, cutoff=unknown_value)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await call
            assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cutoff: unknown value 9" in (unknown.value.details() or "")


async def test_the_page_passes_the_cutoff_and_shows_a_refusal_readably(gateway: tuple[str, Parts, Path]) -> None:
    from starlette.testclient import TestClient

    from core.settings import WebSettings
    from web.app import create_app

    address, _, _ = gateway

    def ask() -> list[tuple[int, Any]]:
        with TestClient(create_app(WebSettings(gateway=address), token="")) as page:
            answers = [page.get("/api/search", params={"q": "a dog", "k": "7", "cutoff": cutoff}) for cutoff in ("autocut", "calibrated", "sideways", "")]
            return [(answer.status_code, answer.json()) for answer in answers]

    (auto_status, auto), (cal_status, cal), (bad_status, bad), (none_status, none) = await asyncio.to_thread(ask)
    assert auto_status == 200 and [h["id"] for h in auto["hits"]] == ["a", "b", "c"]
    assert auto["cutoff"] == "autocut" and auto["cutoff_dropped"] == 4
    assert cal_status == 409 and cal["code"] == "FAILED_PRECONDITION" and "t2i eval --calibrate" in str(cal["error"])
    assert bad_status == 400 and "cutoff must be none, autocut or calibrated" in str(bad["error"])
    assert none_status == 200 and none["cutoff"] == "none" and none["cutoff_score"] is None and len(none["hits"]) == 7


# The page's script run under Node with a stub DOM: which URL each search fetches and what the status line says.
PAGE_HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const fields = {};
const node = (id) => fields[id] || (fields[id] = { id, value: "", textContent: "", classList: { toggle() {} },
  replaceChildren() {}, setAttribute() {}, removeAttribute() {}, append() {} });
const fetched = [];
const context = {
  URLSearchParams, console,
  window: { location: { search: "" }, history: { pushState() {} }, addEventListener() {} },
  document: { querySelector: (s) => node(s.slice(1)), querySelectorAll: () => [], addEventListener() {}, createElement: () => node("new") },
  fetch: async (url) => { fetched.push(url); return { ok: true, status: 200, json: async () => ({ hits: [], cutoff: "none", cutoff_dropped: 0, cutoff_score: null, took_ms: 1 }) }; },
};
vm.createContext(context);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), context);
(async () => {
  const seen = [];
  for (const search of ["?q=a+dog&cutoff=calibrated", "?similar=d&cutoff=calibrated", "?similar=d&cutoff=autocut"]) {
    context.window.location.search = search;
    await vm.runInContext("run()", context);
    seen.push([fetched.at(-1), node("status").textContent]);
  }
  node("cutoff").value = "calibrated";
  await vm.runInContext("searchByImage({ name: 'cat.png' })", context);
  seen.push([fetched.at(-1), node("status").textContent]);
  console.log(JSON.stringify(seen));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_the_page_sends_the_calibrated_cutoff_with_text_searches_only(tmp_path: Path) -> None:
    import subprocess

    harness = tmp_path / "harness.js"
    harness.write_text(PAGE_HARNESS)
    script = Path(__file__).parents[2] / "web" / "static" / "app.js"
    done = subprocess.run(["node", str(harness), str(script)], capture_output=True, text=True, timeout=60, check=True)
    (text, text_status), (similar, similar_status), (auto, _), (upload, upload_status) = json.loads(done.stdout)
    assert text.startswith("/api/search?") and "cutoff=calibrated" in text and "text queries only" not in text_status
    assert similar.startswith("/api/similar?") and "cutoff" not in similar and "id=d" in similar
    assert upload.startswith("/api/search-image?") and "cutoff" not in upload
    for status in (similar_status, upload_status):
        assert "the calibrated cut-off applies to text queries only" in status
    assert "cutoff=autocut" in auto  # autocut works on image searches too


# -- t2i eval --calibrate ------------------------------------------------------------------------------


def test_calibrate_finds_the_version_of_the_index_or_says_which_repository_is_wrong(tmp_path: Path) -> None:
    from core.errors import UserError
    from t2i.evaluate import _row, autocut_quality, served_version

    repo = _repo(tmp_path / "repo")
    info = pb.GetIndexInfoResponse(model_id="unit:model", model_checksum="c" * 64, collection="c1")
    assert served_version(repo, info) == 3
    with pytest.raises(UserError, match=r"no model version in .* is someone/else with checksum ffffffffffff"):
        served_version(repo, pb.GetIndexInfoResponse(model_id="someone/else", model_checksum="f" * 64, collection="c1"))
    with pytest.raises(UserError, match="is not a folder"):
        served_version(tmp_path / "missing", info)
    quality = autocut_quality([JudgedHits([0.9, 0.89, 0.5, 0.49], [True, False, True, False]), JudgedHits([0.5], [True])])
    assert (quality.kept, quality.relevant_kept, quality.relevant) == (3, 2, 3)  # autocut keeps 2 of the first query's 4, and the single hit
    assert _row(quality)["threshold"] is None and json.dumps(_row(quality), allow_nan=False)  # calibration.json stays plain JSON


def test_calibrate_writes_into_the_newest_of_two_versions_of_the_same_weights(tmp_path: Path) -> None:
    from dataclasses import replace

    from t2i.evaluate import served_version

    repo = _repo(tmp_path / "repo")  # version 3, fp32
    int8 = replace(Manifest.read_version(repo, 3), precision="int8", version=4)
    for model in (TEXT_MODEL, VISION_MODEL):
        int8.version_dir(repo, model).mkdir(parents=True)
    int8.write_versioned(repo)
    info = pb.GetIndexInfoResponse(model_id="unit:model", model_checksum="c" * 64, collection="c1")
    assert served_version(repo, info) == 4  # the catalog's for_stamp serves the newest of the two


def test_eval_refuses_a_target_precision_without_calibrate(tmp_path: Path) -> None:
    import argparse

    from core.errors import UserError
    from t2i.evaluate import add_arguments, command

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--queries", str(tmp_path / "q.jsonl"), "--target-precision", "0.8"])
    with pytest.raises(UserError, match="goes with --calibrate"):
        command(args, None)
