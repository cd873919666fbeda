"""text2image-client installed alone: a fresh venv with its wheel and its dependencies only, against the real stack.

The wheel is built (with build isolation, as ``pip install ./client`` builds it) from a clean copy of HEAD
(``git archive``: no stubs, nothing untracked); its dependencies come from the package registry, pinned by
constraints.txt. A script run by that environment, outside the checkout, calls the session's stack with
the sync and the async client: the token (none, read, write), upsert with metadata, info, search_text,
paging, a combined search, a batch, duplicates, embeddings, get_images and labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import LocalStack
from export.samples import sample_photos
from tests.support.stack import assert_serving

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = ("core", "search", "gateway", "web", "t2i", "inference", "devstack", "reindex", "export", "relevance", "numpy", "pymilvus")
# What the environment may hold: the client, its two dependencies and theirs (grpcio needs typing-extensions), and pip.
ALLOWED = {"text2image-client", "grpcio", "protobuf", "typing-extensions", "pip", "setuptools"}
LABEL = "client-package"

# Run by the client's environment: everything it sees, as JSON on stdout.
SCRIPT = r"""
import asyncio, importlib.util, json, os, sys
from datetime import datetime, timezone

import grpc
from text2image_client import AsyncClient, Client, Filter, ImageItem, Query, SearchFailure, SearchResult, Term

gateway, read, write = os.environ["GATEWAY"], os.environ["READ_TOKEN"], os.environ["WRITE_TOKEN"]
photos = json.loads(os.environ["PHOTOS"])
label = os.environ["LABEL"]
only = Filter(all_of=[label])
out = {"server_modules": [name for name in json.loads(os.environ["SERVER_PACKAGES"]) if importlib.util.find_spec(name)]}
import text2image.v1.text2image_pb2 as stubs, text2image_client
out["files"] = [stubs.__file__, text2image_client.__file__]

def code(call):
    try:
        call()
    except grpc.RpcError as error:
        return error.code().name
    return "OK"

stamp = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
with Client(gateway, token=write, timeout=60) as client:
    items = [ImageItem(f"{label}/{i}", open(path, "rb").read(), uri=path, labels=[label], modified_time=stamp) for i, path in enumerate(photos)]
    copy = ImageItem(f"{label}/copy", open(photos[0], "rb").read(), labels=[label])  # a planted duplicate of image 0
    done = client.upsert(items + [copy, ImageItem(f"{label}/broken", b"not an image", labels=[label])])
    out["upsert"] = [done.upserted, done.failed, done.results[-1].ok, bool(done.results[-1].error)]
    info = client.info()
    out["info"] = [info.count, info.dimension, info.alias, type(info.raw).__name__]
    first = client.search_text("a photo", top_k=3, filter=only)
    out["first"] = [first.ids, type(first.raw).__name__, bool(first.next_page_token), first.hits[0].metadata is not None]
    meta = first.hits[0].metadata
    out["metadata"] = [meta.width > 0, meta.height > 0, meta.format, meta.modified_time == stamp]
    out["walk"] = [hit.id for hit in client.iter_search_text("a photo", page_size=2, filter=only)]
    out["single"] = client.search_text("a photo", top_k=len(photos) + 6, filter=only).ids
    out["combined"] = client.search(["a photo", Term(id=f"{label}/0", weight=0.5)], top_k=3, filter=only, exclude_ids=True).ids
    batch = client.search_batch([Query(["a photo"], top_k=2, filter=only), Query([Term(id=f"{label}/none")], top_k=2)])
    out["batch"] = [type(batch[0]).__name__, len(batch[0].hits), type(batch[1]).__name__, batch[1].code.name if isinstance(batch[1], SearchFailure) else ""]
    out["duplicates"] = [[pair.a, pair.b] for pair in client.find_duplicates(0.999, filter=only)]
    embedded = client.embed_text(["a photo", "a dog"])
    out["embed"] = [len(embedded.vectors), len(embedded.vectors[0]) == info.dimension, round(sum(v * v for v in embedded.vectors[0]), 3)]
    out["records"] = [record.id for record in client.get_images([f"{label}/1", "no-such-id"])]
    out["labels"] = label in client.labels().labels

with Client(gateway, token=read, timeout=20) as reader:
    out["read_upsert"] = code(lambda: reader.upsert([ImageItem(f"{label}/x", b"x")]))
    out["read_search"] = code(lambda: reader.search_text("a photo", top_k=1))
with Client(gateway, timeout=20) as anonymous:
    out["anonymous"] = code(lambda: anonymous.info())

async def asynchronous():
    async with AsyncClient([gateway], token=read, timeout=20) as client:
        result = await client.search_text("a photo", top_k=2, filter=only)
        walked = [hit.id async for hit in client.iter_search_text("a photo", page_size=3, max_results=5, filter=only)]
        pairs = [[pair.a, pair.b] async for pair in client.find_duplicates(0.999, filter=only)]
        return [result.ids, walked, pairs, (await client.info()).count]

out["async"] = asyncio.run(asynchronous())
with Client(gateway, token=write, timeout=30) as client:
    out["deleted"] = client.delete([f"{label}/{i}" for i in range(len(photos))] + [f"{label}/copy"])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def client_env(head_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with text2image-client's wheel (built from a clean copy of HEAD: ``head_wheel``'s neighbour) and its dependencies, pinned by constraints.txt."""
    work = tmp_path_factory.mktemp("client-package")
    (wheel,) = head_wheel.parent.glob("text2image_client-*.whl")
    started = time.monotonic()
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"), str(wheel)]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-4000:]
    print(f"client environment installed in {time.monotonic() - started:.0f} s")
    return venv


def installed_distributions(venv: Path) -> dict[str, str]:
    listing = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=json", "--disable-pip-version-check"], capture_output=True, text=True, check=True)
    return {entry["name"].lower().replace("_", "-"): entry["version"] for entry in json.loads(listing.stdout)}


def constraints_pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_the_client_installs_alone_with_the_pinned_grpcio_and_protobuf(client_env: Path) -> None:
    installed = installed_distributions(client_env)
    assert set(installed) <= ALLOWED and {"text2image-client", "grpcio", "protobuf"} <= set(installed), installed
    pins = constraints_pins()
    assert installed["grpcio"] == pins["grpcio"] and installed["protobuf"] == pins["protobuf"], installed


@pytest.fixture(scope="module")
def seen(client_env: Path, stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the script saw, run by the client's environment outside the checkout (``-P``, no PYTHONPATH)."""
    photos = [str(path) for path in sample_photos(5)]
    folder = tmp_path_factory.mktemp("client-script")
    (folder / "script.py").write_text(SCRIPT)
    clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env = {
        **clean,
        "GATEWAY": stack.gateway_address,
        "READ_TOKEN": stack.token("read"),
        "WRITE_TOKEN": stack.token("write"),
        "PHOTOS": json.dumps(photos),
        "LABEL": LABEL,
        "SERVER_PACKAGES": json.dumps(SERVER_PACKAGES),
    }
    result = subprocess.run([str(client_env / "bin" / "python"), "-P", "script.py"], capture_output=True, text=True, env=env, cwd=folder, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    answer["photos"] = len(photos)
    return answer


def test_no_package_of_the_server_is_importable_there(seen: dict[str, Any], client_env: Path) -> None:
    assert seen["server_modules"] == []
    assert all(path.startswith(str(client_env)) for path in seen["files"]), seen["files"]


def test_writes_and_reads_with_the_write_token(seen: dict[str, Any], stack: LocalStack) -> None:
    photos = seen["photos"] + 1  # and the planted copy
    assert seen["upsert"] == [photos, 1, False, True], "the broken image fails alone, with a reason"
    count, dimension, alias, raw = seen["info"]
    assert count >= photos and dimension > 0 and alias == stack.alias and raw == "GetIndexInfoResponse"
    ids, raw, more, has_metadata = seen["first"]
    assert len(ids) == 3 and all(i.startswith(LABEL + "/") for i in ids) and raw == "SearchResponse" and more and has_metadata
    assert seen["metadata"][:2] == [True, True] and seen["metadata"][2] in ("PNG", "JPEG", "GIF", "TIFF") and seen["metadata"][3]
    assert seen["records"] == [f"{LABEL}/1"] and seen["labels"] is True
    assert seen["embed"] == [2, True, 1.0]
    assert seen["deleted"] == photos
    assert_serving(stack)


def test_the_page_iterator_walks_what_one_deep_search_returns(seen: dict[str, Any]) -> None:
    assert len(seen["walk"]) == seen["photos"] + 1 and seen["walk"] == seen["single"], "every indexed image once, in the deep search's order"
    assert len(set(seen["walk"])) == len(seen["walk"])


def test_combined_batch_and_duplicates(seen: dict[str, Any]) -> None:
    assert len(seen["combined"]) == 3 and f"{LABEL}/0" not in seen["combined"], "exclude_ids leaves the id term's image out"
    assert seen["batch"] == ["SearchResult", 2, "SearchFailure", "NOT_FOUND"]
    assert [f"{LABEL}/0", f"{LABEL}/copy"] in seen["duplicates"], seen["duplicates"]


def test_the_token_decides_what_a_client_may_do(seen: dict[str, Any]) -> None:
    assert seen["read_upsert"] == "PERMISSION_DENIED" and seen["read_search"] == "OK"
    assert seen["anonymous"] == "UNAUTHENTICATED"


def test_the_async_client_against_the_stack(seen: dict[str, Any]) -> None:
    ids, walked, pairs, count = seen["async"]
    assert ids == seen["walk"][:2] and walked == seen["walk"][:5] and pairs == seen["duplicates"] and count >= seen["photos"]
