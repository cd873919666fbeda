"""FindDuplicates on the real stack: planted near-duplicates among distinct photos, paging, bad input.

The session stack serves a tiny random CLIP, whose image embeddings cannot tell photos apart: on
the 20 sample photos its pairwise cosines have a median of 0.92 and a 95th percentile of 0.99, so
every pair would be a "duplicate" at 0.95 and the test would prove nothing. This module runs a
gateway of its own on the session's stack of the shipped shapes model (``shapes_stack``:
``relevance/models/shapes``, trained on drawn shapes, not photos), on an alias of its own, so no
other module's rows meet its own. That model tells the ten colour-and-content-distinct photos of
``DISTINCT`` apart (every pairwise cosine below 0.9, measured with the model offline, 2026-12-01);
it does put some other sample photos together (the grey ones: camera, coins, page at 0.97-0.98),
which is why they are not among them.

Planted among them: a re-encoded JPEG (``rocket.jpg`` at quality 40), a copy resized to half (chelsea) and a
mirrored copy (horse). The first two must pair with their originals at the default threshold
(0.95). The mirror is judged on its own: its score is the model's (0.963 for the horse through
this stack, 2026-12-01, above 0.95; docs/queries.md "Duplicates"), and the stream must report it
exactly when that score reaches the threshold. Every expected pair is also computed independently
from the EmbedImage vectors of the same bytes (numpy), and the stream must give exactly those.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image, ImageOps

from core.index import ImageIndex
from core.manifest import Manifest
from core.records import ModelStamp
from devstack.stack import LocalStack
from export.samples import sample_dir
from t2i.client import GatewayClient
from tests.support.shared_stack import on_stack
from tests.support.stack import GATEWAY_ENV, assert_serving
from text2image.v1 import text2image_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.torch]

LABEL = "dups"
DISTINCT = (
    "astronaut.png",
    "chelsea.png",
    "horse.png",
    "rocket.jpg",
    "grass.png",
    "camera.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "logo.png",
    "color.png",
)
REENCODED, RESIZED, MIRRORED = "copy/rocket-q40.jpg", "copy/chelsea-half.png", "copy/horse-mirror.png"
ORIGINAL = {REENCODED: "rocket.jpg", RESIZED: "chelsea.png", MIRRORED: "horse.png"}


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def planted() -> dict[str, bytes]:
    """id -> bytes: the distinct photos and the three copies."""
    folder = sample_dir()
    images = {name: (folder / name).read_bytes() for name in DISTINCT}
    rocket, chelsea, horse = (Image.open(folder / name).convert("RGB") for name in ("rocket.jpg", "chelsea.png", "horse.png"))
    images[REENCODED] = encoded(rocket, "JPEG", quality=40)
    images[RESIZED] = encoded(chelsea.resize((chelsea.width // 2, chelsea.height // 2), Image.Resampling.LANCZOS), "PNG")
    images[MIRRORED] = encoded(ImageOps.mirror(horse), "PNG")
    return images


@pytest.fixture(scope="module")
def dups_stack(shapes_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The session's shapes model behind a gateway of this module's own, on its own alias."""
    with on_stack(shapes_stack, "t2i_dups", tmp_path_factory.mktemp("duplicates") / "stack", extra_env=GATEWAY_ENV) as local:
        yield local


@pytest.fixture(scope="module")
def client(dups_stack: LocalStack) -> Iterator[GatewayClient]:
    gateway = GatewayClient(dups_stack.gateway_address, timeout_s=60, token=dups_stack.token("write"))
    yield gateway
    gateway.close()


@pytest.fixture(scope="module")
def cosines(client: GatewayClient) -> dict[tuple[str, str], float]:
    """The planted images upserted, and the cosine of every pair (a < b) from their EmbedImage vectors, by numpy."""
    images = planted()
    items = [pb.ImageItem(id=i, content=data, uri=f"mem://{i}", labels=[LABEL]) for i, data in images.items()]
    response = client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=120)
    assert response.failed == 0 and response.upserted == len(images), response
    ids = sorted(images)
    vectors = client.embedding.EmbedImage(pb.EmbedImageRequest(images=[images[i] for i in ids]), timeout=120).embeddings
    matrix = np.asarray([v.values for v in vectors], dtype=np.float32)
    scores = matrix @ matrix.T
    return {(a, b): float(scores[n, m]) for n, a in enumerate(ids) for m, b in enumerate(ids) if a < b}


def stream(client: GatewayClient, **fields: Any) -> list[pb.FindDuplicatesResponse]:
    fields.setdefault("filter", pb.Filter(labels=pb.LabelFilter(all_of=[LABEL])))
    return list(client.find_duplicates(**fields))


def pairs(responses: list[pb.FindDuplicatesResponse]) -> dict[tuple[str, str], float]:
    found = [((p.a, p.b), p.score) for r in responses for p in r.pairs]
    assert len(found) == len(dict(found)), "a pair was reported twice"
    return dict(found)


def key(one: str, other: str) -> tuple[str, str]:
    return (min(one, other), max(one, other))


def test_the_reencoded_and_resized_copies_pair_with_their_originals_and_nothing_else_does(client: GatewayClient, cosines: dict[tuple[str, str], float]) -> None:
    responses = stream(client)
    found = pairs(responses)
    expected = {pair: score for pair, score in cosines.items() if score >= 0.95}
    assert set(found) == set(expected), (found, expected)
    assert found == pytest.approx(expected, abs=1e-4)
    assert key(REENCODED, "rocket.jpg") in found and key(RESIZED, "chelsea.png") in found
    distinct = [pair for pair in found if pair[0] in DISTINCT and pair[1] in DISTINCT]
    assert distinct == [], f"distinct photos paired: {distinct}"
    assert set(found) - {key(REENCODED, "rocket.jpg"), key(RESIZED, "chelsea.png")} <= {key(MIRRORED, "horse.png")}
    last = responses[-1]
    assert last.scanned == last.total == len(DISTINCT) + 3 and last.next_page_token == "" and last.collection.startswith("t2i_dups_")
    print(f"\ndefault threshold: {len(found)} pairs; copies: " + ", ".join(f"{c} {cosines[key(c, o)]:.4f}" for c, o in ORIGINAL.items()))


def test_the_mirrored_copy_is_reported_at_its_own_score(client: GatewayClient, cosines: dict[tuple[str, str], float]) -> None:
    mirror = cosines[key(MIRRORED, "horse.png")]
    both = pb.Filter(ids=[MIRRORED, "horse.png"])
    low = pairs(stream(client, min_score=0.5, filter=both))
    assert low == pytest.approx({key(MIRRORED, "horse.png"): mirror}, abs=1e-4)
    at_default = key(MIRRORED, "horse.png") in pairs(stream(client, filter=both))
    assert at_default == (mirror >= 0.95)
    print(f"\nmirrored horse: cosine {mirror:.4f} with its original ({'above' if at_default else 'below'} the default 0.95)")


def test_pages_of_max_images_give_the_pairs_of_one_stream(client: GatewayClient, cosines: dict[tuple[str, str], float]) -> None:
    whole = pairs(stream(client, min_score=0.5))
    assert set(whole) == {pair for pair, score in cosines.items() if score >= 0.5} and len(whole) > 5
    for size in (1, 4):
        found: dict[tuple[str, str], float] = {}
        token, calls = "", 0
        while True:
            responses = stream(client, min_score=0.5, max_images=size, page_token=token)
            page = pairs(responses)
            assert not set(page) & set(found), "a pair reported by two pages"
            found.update(page)
            token, calls = responses[-1].next_page_token, calls + 1
            if not token:
                break
        assert found == pytest.approx(whole, abs=1e-5) and calls == -(-(len(DISTINCT) + 3) // size)


def status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        list(call())
    return raised.value.code(), raised.value.details() or ""


def test_bad_input_gets_clear_statuses_and_the_gateway_stays_serving(client: GatewayClient, dups_stack: LocalStack) -> None:
    cases = {
        "min_score": (pb.FindDuplicatesRequest(min_score=0.3), grpc.StatusCode.INVALID_ARGUMENT, "min_score must be between 0.5 and 1"),
        "max_neighbors": (pb.FindDuplicatesRequest(max_neighbors=5000), grpc.StatusCode.INVALID_ARGUMENT, "max_neighbors must be between 1 and 1000"),
        "max_images": (pb.FindDuplicatesRequest(max_images=-1), grpc.StatusCode.INVALID_ARGUMENT, "max_images"),
        "garbage token": (pb.FindDuplicatesRequest(page_token="not-a-token"), grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a FindDuplicates token"),
        "ids": (pb.FindDuplicatesRequest(filter=pb.Filter(ids=["x"] * 10_001)), grpc.StatusCode.RESOURCE_EXHAUSTED, "at most 10,000"),
        "label": (pb.FindDuplicatesRequest(filter=pb.Filter(labels=pb.LabelFilter(any_of=["x" * 129]))), grpc.StatusCode.INVALID_ARGUMENT, "longer than"),
    }
    for name, (request, code, message) in cases.items():
        got = status(lambda request=request: client.search.FindDuplicates(request, timeout=30))
        assert got[0] == code and message in got[1], (name, got)
    token = stream(client, min_score=0.5, max_images=2)[-1].next_page_token
    code, details = status(lambda: client.find_duplicates(min_score=0.6, page_token=token, filter=pb.Filter(labels=pb.LabelFilter(all_of=[LABEL]))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "another min_score, max_neighbors or filter" in details
    assert status(lambda: client.find_duplicates(timeout_s=0.001))[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    # An alias swap to another collection: the old token is FAILED_PRECONDITION, and good again after swapping back.
    stamp = ModelStamp.of(Manifest.read(Path(dups_stack.repo)))
    index = ImageIndex(dups_stack.milvus_uri, dups_stack.alias, stamp, timeout_s=30, token=dups_stack.milvus_token)
    served = index.active_collection()
    assert served is not None
    swapped = index.new_collection(f"{dups_stack.alias}_swapped")
    try:
        index.swap_alias(swapped)
        code, details = status(lambda: client.find_duplicates(min_score=0.5, page_token=token, filter=pb.Filter(labels=pb.LabelFilter(all_of=[LABEL]))))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and served in details and swapped in details, details
    finally:
        index.swap_alias(served)
        index.drop(swapped)
        index.close()
    assert pairs(stream(client, min_score=0.5, max_images=50, page_token=token))
    assert_serving(dups_stack)
