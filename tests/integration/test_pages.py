"""Pages on the real stack: SearchText and SearchImage walked with page_token, against one search as deep.

The module fills a collection of its own with 45 distinct images (random noise, so every score
differs), seals it and points the session stack's alias at it; at the end the alias goes back to
the session's collection and the module's collections are dropped, so the other tests see the
stack as they left it. The alias swap is a second collection holding copies of the same rows: the
hits would even be the same, yet a token of the first collection is refused.
"""

from __future__ import annotations

import functools
import io
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from PIL import Image

from core.index import ImageIndex
from devstack.stack import LocalStack
from t2i.client import GatewayClient
from tests.support.polling import wait_for
from tests.support.stack import health_status, run_t2i
from text2image.v1 import text2image_pb2 as pb

IMAGES, TOP_K, SERVING = 45, 6, 1
TERMS = [pb.QueryTerm(text="a photo of static noise"), pb.QueryTerm(id="pages/11.png", weight=-0.5)]  # Search pages through search.pages too


def noise(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Pages:
    collection: str
    ids: list[str]
    made: list[str]


def _serves(client: GatewayClient, collection: str) -> Callable[[], bool]:
    return lambda: client.search_text("anything", top_k=1).collection == collection


@pytest.fixture(scope="module")
def pages(stack: LocalStack, index: ImageIndex, client: GatewayClient) -> Iterator[Pages]:
    ours = index.ensure_active()
    mine = index.new_collection(f"{stack.alias}_pages_{uuid.uuid4().hex[:8]}")
    state = Pages(mine, [f"pages/{n:02}.png" for n in range(IMAGES)], [mine])
    index.swap_alias(mine)
    try:
        for start in range(0, IMAGES, 15):
            items = [pb.ImageItem(id=i, content=noise(n), uri=f"mem://{i}") for n, i in enumerate(state.ids) if start <= n < start + 15]
            assert client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=60).upserted == len(items)
        assert index.seal(mine, wait_s=120)
        wait_for(_serves(client, mine), 10, "searches to go to the module's collection")
        yield state
    finally:
        index.swap_alias(ours)
        for name in state.made:
            index.drop(name)
    wait_for(_serves(client, ours), 10, "searches to go to the session's collection again")


def walk(search: Callable[..., pb.SearchResponse], pages: int | None = None) -> tuple[list[list[str]], list[str]]:
    """The ids of each page and each page's next_page_token, for ``pages`` pages (None: to the last)."""
    ids: list[list[str]] = []
    tokens: list[str] = []
    token = ""
    while pages is None or len(ids) < pages:
        response = search(top_k=TOP_K, page_token=token)
        ids.append([hit.id for hit in response.hits])
        tokens.append(response.next_page_token)
        token = response.next_page_token
        if not token:
            break
        assert len(ids) <= IMAGES
    return ids, tokens


def refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details() or ""


def searches(client: GatewayClient) -> dict[str, Callable[..., pb.SearchResponse]]:
    return {
        "text": lambda **fields: client.search_text("a photo of static noise", **fields),
        "image bytes": lambda **fields: client.search_image(image=noise(3), **fields),
        "image id": lambda **fields: client.search_image(id="pages/07.png", exclude_self=True, **fields),
        "terms": lambda **fields: client.search.Search(pb.SearchRequest(terms=TERMS, **fields), timeout=20),
    }


def test_three_pages_are_one_search_as_deep_and_the_walk_ends_with_no_token(client: GatewayClient, pages: Pages) -> None:
    for name, search in searches(client).items():
        three, tokens = walk(search, 3)
        assert [len(page) for page in three] == [TOP_K] * 3 and all(tokens), name
        whole = search(top_k=3 * TOP_K)
        assert [hit.id for hit in whole.hits] == [i for page in three for i in page], name
        scores = [hit.score for hit in whole.hits]
        assert scores == sorted(scores, reverse=True) and whole.collection == pages.collection
        everything, tokens = walk(search)
        expected = IMAGES - 1 if name == "image id" else IMAGES
        flat = [i for page in everything for i in page]
        assert sorted(flat) == sorted(i for i in pages.ids if name != "image id" or i != "pages/07.png"), name
        assert len(flat) == expected and tokens[-1] == "" and all(tokens[:-1]) and len(everything[-1]) == expected % TOP_K, name


def test_a_token_of_another_request_or_damaged_is_invalid_argument(stack: LocalStack, client: GatewayClient, pages: Pages) -> None:
    token = client.search_text("a photo of static noise", top_k=TOP_K).next_page_token
    assert token
    calls = {
        "another query": lambda: client.search_text("a photo of a dog", top_k=TOP_K, page_token=token),
        "another filter": lambda: client.search_text("a photo of static noise", top_k=TOP_K, page_token=token, filter=pb.Filter(uri_prefix="mem://")),
        "another min_score": lambda: client.search_text("a photo of static noise", top_k=TOP_K, page_token=token, min_score=-1.0),
        "an image search": lambda: client.search_image(image=noise(3), top_k=TOP_K, page_token=token),
        "a Search of the same text": lambda: client.search.Search(pb.SearchRequest(terms=TERMS[:1], top_k=TOP_K, page_token=token), timeout=20),
    }
    for what, call in calls.items():
        code, details = refused(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token: issued for another request" in details, what
    middle = len(token) // 2
    damaged = token[:middle] + ("B" if token[middle] == "A" else "A") + token[middle + 1 :]
    for bad in (damaged, "not-a-token", token + "AAAA", "\u00e9t\u00e9"):
        code, details = refused(functools.partial(client.search_text, "a photo of static noise", top_k=TOP_K, page_token=bad))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a token this server issued; start from the first page" in details, bad
    assert health_status(stack) == SERVING


def test_after_an_alias_swap_an_old_token_is_failed_precondition(stack: LocalStack, index: ImageIndex, client: GatewayClient, pages: Pages) -> None:
    tokens = {name: search(top_k=TOP_K).next_page_token for name, search in searches(client).items()}
    copy = index.new_collection(f"{pages.collection}_copy")
    pages.made.append(copy)
    assert sorted(index.copy_rows(pages.collection, copy, pages.ids, {})) == sorted(pages.ids)
    assert index.seal(copy, wait_s=120)
    index.swap_alias(copy)  # a rebuild promoted another collection, here with the very same rows
    wait_for(_serves(client, copy), 10, "searches to go to the copy")
    for name, search in searches(client).items():
        code, details = refused(functools.partial(search, top_k=TOP_K, page_token=tokens[name]))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, name
        assert f"the index was rebuilt since this page (collection {pages.collection}, now {copy}): start again from the first page" in details
        assert search(top_k=TOP_K).next_page_token  # the first page again works
    assert health_status(stack) == SERVING
    index.swap_alias(pages.collection)  # swapped back (a rollback): the old tokens are good again
    wait_for(_serves(client, pages.collection), 10, "searches to go back to the module's collection")
    assert client.search_text("a photo of static noise", top_k=TOP_K, page_token=tokens["text"]).hits


def test_t2i_search_walks_pages_and_prints_where_to_go_on(stack: LocalStack, client: GatewayClient, pages: Pages) -> None:
    query = "a photo of static noise"
    whole = [hit.id for hit in client.search_text(query, top_k=3 * TOP_K).hits]

    def printed(*args: str) -> tuple[list[str], str]:
        ran = run_t2i(stack, "search", query, "--top-k", str(TOP_K), *args)
        assert ran.returncode == 0, ran.stderr[-2000:]
        token = re.search(r"^next page: --page-token (\S+)$", ran.stdout, re.MULTILINE)
        return re.findall(r"^ +\d+\. [+-]\d\.\d{4}  (\S+)", ran.stdout, re.MULTILINE), token.group(1) if token else ""

    two, token = printed("--pages", "2")
    assert two == whole[: 2 * TOP_K] and token
    third, _ = printed("--page-token", token)
    assert third == whole[2 * TOP_K :]
