"""Pages of a search (``search.pages``): the token, its checks, the depth cap and the order across pages;
then the engine walking pages over the fake Milvus and fake Triton clients."""

from __future__ import annotations

import base64
import math
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.errors import FailedPrecondition, InvalidArgument
from core.filters import SearchFilter
from core.records import Hit
from search.cutoff import Cut, Cutoff, apply_cutoff
from search.pages import MARGIN, NOT_OURS, Cursor, Window, decode_token, encode_token, identity, open_window
from tests.support.engine import Parts
from tests.support.images import png

DIGEST = identity("text", query="a dog", filter=SearchFilter(), min_score=None, cutoff=Cutoff.NONE)


def keep(hits: list[Hit]) -> Cut:
    return apply_cutoff(hits, Cutoff.NONE)


def hit(item_id: str, score: float) -> Hit:
    return Hit(item_id, f"mem://{item_id}", score, [])


class ShuffledTies:
    """An exact index that returns the best ``limit`` hits with ties broken at random (as Milvus may), best first."""

    def __init__(self, scores: dict[str, float], seed: int = 0) -> None:
        self.scores = scores
        self.random = random.Random(seed)

    def search(self, limit: int, min_score: float | None = None) -> list[Hit]:
        ids = list(self.scores)
        self.random.shuffle(ids)
        ranked = sorted(ids, key=lambda i: -self.scores[i])  # stable: ties stay shuffled
        hits = [hit(i, self.scores[i]) for i in ranked[:limit]]
        return [h for h in hits if min_score is None or h.score >= min_score]


def walk(index: ShuffledTies | LateFinds, top_k: int, max_depth: int = 10_000, min_score: float | None = None) -> list[list[str]]:
    pages: list[list[str]] = []
    token = ""
    while True:
        window = open_window(token, DIGEST, top_k, max_depth)
        page = window.finish("c1", index.search(window.fetch, min_score), keep)
        pages.append([h.id for h in page.hits])
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 1000


def flat(pages: list[list[str]]) -> list[str]:
    return [item_id for page in pages for item_id in page]


def best_first(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda i: (-scores[i], i))


# -- the token ------------------------------------------------------------------------------------


def test_a_token_round_trips_and_is_urlsafe() -> None:
    cursor = Cursor("t2i_images_20261201", DIGEST, 300, 0.123456789012345, 'dir/ä "b".jpg')
    token = encode_token(cursor)
    assert decode_token(token) == cursor
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_every_flipped_byte_and_foreign_strings_are_invalid_argument() -> None:
    raw = bytearray(base64.urlsafe_b64decode(encode_token(Cursor("c1", DIGEST, 10, 0.5, "x")) + "=="))
    for position in range(len(raw)):
        damaged = bytearray(raw)
        damaged[position] ^= 0x01
        token = base64.urlsafe_b64encode(bytes(damaged)).rstrip(b"=").decode()
        with pytest.raises(InvalidArgument, match="not a token this server issued"):
            open_window(token, DIGEST, 10, 10_000)
    for foreign in ("x", "!!!!", "dGhpcyBpcyBub3Qgb3Vycw", "A" * 40, "é", encode_token(Cursor("c1", DIGEST, 10, 0.5, "x"))[:-3]):
        with pytest.raises(InvalidArgument) as raised:
            open_window(foreign, DIGEST, 10, 10_000)
        assert str(raised.value) == NOT_OURS
    with pytest.raises(InvalidArgument, match="longer than any token"):
        open_window("A" * 100_000, DIGEST, 10, 10_000)


def test_a_token_of_another_request_is_invalid_argument() -> None:
    token = encode_token(Cursor("c1", DIGEST, 10, 0.5, "x"))
    others = [
        identity("text", query="a cat", filter=SearchFilter(), min_score=None, cutoff=Cutoff.NONE),
        identity("text", query="a dog", filter=SearchFilter(all_of=("x",)), min_score=None, cutoff=Cutoff.NONE),
        identity("text", query="a dog", filter=SearchFilter(), min_score=0.1, cutoff=Cutoff.NONE),
        identity("text", query="a dog", filter=SearchFilter(), min_score=None, cutoff=Cutoff.AUTOCUT),
        identity("image", query="a dog", filter=SearchFilter(), min_score=None, cutoff=Cutoff.NONE),
    ]
    assert len(set(others) | {DIGEST}) == len(others) + 1
    for other in others:
        with pytest.raises(InvalidArgument, match="issued for another request"):
            open_window(token, other, 10, 10_000)
    assert open_window(token, DIGEST, 25, 10_000).offset == 10  # top_k may change between pages


def test_identity_hashes_bytes_and_vectors_and_tells_them_apart() -> None:
    import numpy as np

    assert identity("image", image=b"\x89PNG one") != identity("image", image=b"\x89PNG two")
    assert identity("search", terms=[np.ones(3)]) == identity("search", terms=[np.ones(3, dtype=np.float64)])
    assert identity("search", terms=[np.ones(3)]) != identity("search", terms=[np.ones(3) * 2])
    assert len(identity("image", image=b"x" * 10_000_000)) == 32


def test_a_token_of_another_collection_is_failed_precondition() -> None:
    window = open_window(encode_token(Cursor("t2i_old", DIGEST, 10, 0.5, "x")), DIGEST, 10, 10_000)
    with pytest.raises(FailedPrecondition, match=r"rebuilt since this page \(collection t2i_old, now t2i_new\): start again from the first page"):
        window.finish("t2i_new", [hit("a", 0.4)], keep)
    assert window.finish("t2i_old", [hit("a", 0.4)], keep).hits[0].id == "a"


# -- depth, order and where a walk ends ------------------------------------------------------------


def test_the_depth_cap_refuses_a_page_past_it_and_ends_the_walk_before_it() -> None:
    with pytest.raises(InvalidArgument, match=r"end at hit 1,010, past the server's maximum depth of 1,000 \(T2I_MAX_PAGE_DEPTH\); ask for at most 10 hits"):
        open_window(encode_token(Cursor("c1", DIGEST, 990, 0.5, "x")), DIGEST, 20, 1000)
    assert open_window(encode_token(Cursor("c1", DIGEST, 990, 0.5, "x")), DIGEST, 10, 1000).fetch == 1000  # the last page: no margin
    scores = {f"i{n:03}": 1 - n / 1000 for n in range(100)}
    pages = walk(ShuffledTies(scores), top_k=7, max_depth=30)
    assert [len(p) for p in pages] == [7, 7, 7, 7]  # 28 hits: a fifth page would end at 35
    assert flat(pages) == best_first(scores)[:28]


def test_ties_are_ordered_by_id_across_pages_whatever_order_the_index_returns() -> None:
    rng = random.Random(7)
    names = [f"id{n:03}" for n in range(120)]
    rng.shuffle(names)
    scores: dict[str, float] = {}
    while len(scores) < len(names):  # groups of 1 to 5 equal scores
        score = 1 - len(scores) / 200
        scores.update(dict.fromkeys(names[len(scores) : len(scores) + rng.randint(1, 5)], score))
    expected = best_first(scores)
    for top_k in (5, 8, 30):
        for seed in range(3):
            pages = walk(ShuffledTies(scores, seed), top_k)
            ids = flat(pages)
            assert len(ids) == len(set(ids)), "a hit came twice"
            assert ids == expected
            assert all(len(p) <= top_k for p in pages) and pages[-1]


def test_a_page_ending_inside_a_group_the_index_may_not_have_returned_whole_ends_before_it() -> None:
    window = open_window("", DIGEST, 4, 10_000)
    fetched = [hit("a", 0.9), hit("b", 0.8), hit("z", 0.5), hit("y", 0.5), *[hit(f"t{i}", 0.5) for i in range(window.fetch - 4)]]
    page = window.finish("c1", fetched, keep)
    assert [h.id for h in page.hits] == ["a", "b"] and page.next_page_token  # the group of 0.5 goes whole to the next page
    alone = open_window("", DIGEST, 4, 10_000)
    page = alone.finish("c1", [hit(f"t{i:02}", 0.5) for i in range(alone.fetch)], keep)
    assert [h.id for h in page.hits] == ["t00", "t01", "t02", "t03"] and page.next_page_token  # a group longer than the page


def test_min_score_and_the_cut_off_end_the_walk() -> None:
    scores = {f"i{n:02}": 1 - n / 50 for n in range(50)}
    pages = walk(ShuffledTies(scores), top_k=5, min_score=0.81)
    assert flat(pages) == best_first(scores)[:10] and [len(p) for p in pages] == [5, 5]
    window = open_window("", DIGEST, 5, 10_000)
    cliff = [hit("a", 0.9), hit("b", 0.89), hit("c", 0.88), hit("d", 0.3), hit("e", 0.29), *[hit(f"z{i}", 0.2) for i in range(MARGIN)]]
    page = window.finish("c1", cliff, lambda found: apply_cutoff(found, Cutoff.AUTOCUT))
    assert [h.id for h in page.hits] == ["a", "b", "c"] and page.cut.dropped == 2 and page.next_page_token == ""


def test_exactly_a_full_last_page_has_no_token() -> None:
    scores = {f"i{n}": 1 - n / 10 for n in range(6)}
    assert walk(ShuffledTies(scores), top_k=3) == [["i0", "i1", "i2"], ["i3", "i4", "i5"]]


def test_a_hit_ranked_before_the_cursor_on_a_deeper_page_is_not_repeated() -> None:
    token = encode_token(Cursor("c1", DIGEST, 2, 0.8, "b"))
    window = open_window(token, DIGEST, 2, 10_000)
    # An approximate index, searching deeper, found "new" (0.85) that the first page missed.
    page = window.finish("c1", [hit("a", 0.9), hit("new", 0.85), hit("b", 0.8), hit("c", 0.7), hit("d", 0.6)], keep)
    assert [h.id for h in page.hits] == ["c", "d"]


def test_a_page_shortened_by_hits_found_before_the_cursor_still_has_a_next_page() -> None:
    window = open_window(encode_token(Cursor("c1", DIGEST, 4, 0.5, "d")), DIGEST, 4, 10_000)
    # The deeper search (a larger ef) found four hits that the first page missed, all before its last one.
    before = [hit(f"m{i}", 0.9 - i / 100) for i in range(4)] + [hit(i, 0.8 - n / 10) for n, i in enumerate("abcd")]
    after = [hit(f"z{i:02}", 0.45 - i / 100) for i in range(window.fetch - len(before))]
    page = window.finish("c1", before + after, keep)
    assert [h.id for h in page.hits] == ["z00", "z01", "z02", "z03"] and page.next_page_token
    short = window.finish("c1", before + after[:3], keep)  # the index had no more than it returned: the last page
    assert [h.id for h in short.hits] == ["z00", "z01", "z02"] and short.next_page_token == ""
    crowded = [hit(f"m{i:02}", 0.99 - i / 100) for i in range(window.fetch - 6)] + before[4:]  # fetched in full, 2 hits after the cursor
    page = window.finish("c1", crowded + after[:2], keep)
    assert [h.id for h in page.hits] == ["z00"] and page.next_page_token  # z01, the last hit fetched, waits: an equal score may lie beyond


class LateFinds:
    """An approximate index that finds every third hit only in searches at least 40 hits deeper than its rank."""

    def __init__(self, count: int) -> None:
        self.scores = {f"i{n:03}": 1 - n / 1000 for n in range(count)}

    def search(self, limit: int, min_score: float | None = None) -> list[Hit]:
        found = [i for n, i in enumerate(self.scores) if n % 3 or limit >= n + 40]
        return [hit(i, self.scores[i]) for i in found[:limit]]


def test_hits_a_deeper_page_finds_before_the_cursor_take_no_room_from_the_pages_after_it() -> None:
    index = LateFinds(200)
    pages = walk(index, top_k=10)
    ids = flat(pages)
    assert len(ids) == len(set(ids)) and ids == sorted(ids, key=lambda i: -index.scores[i])
    assert {i for n, i in enumerate(index.scores) if n % 3} <= set(ids)  # every hit the first searches saw, to the end of the ranking
    assert ids[-1] == "i199" and pages[-1]


def test_window_fetch_never_asks_milvus_past_its_limit() -> None:
    assert Window(DIGEST, 16384, 10_000, None).fetch == 16384
    assert Window(DIGEST, 100, 10_000, None).fetch == 100 + MARGIN
    assert math.isclose(decode_token(encode_token(Cursor("c", DIGEST, 1, 1 / 3, "x"))).score, 1 / 3, rel_tol=0, abs_tol=0)


# -- the engine on fakes ---------------------------------------------------------------------------


@pytest.fixture()
async def parts(model_repo: Path) -> AsyncIterator[Parts]:
    made = Parts(model_repo)
    made.engine.max_page_depth = 9
    # 2-d vectors at distinct angles from the fake encoder's (3, 4), and "twin" equal to "g".
    angles = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4, "e": 0.5, "f": 0.6, "g": 0.7, "twin": 0.7, "h": 0.8, "i": 0.9, "j": 1.0}
    rows = {item_id: {"uri": f"mem://{item_id}", "labels": [], "vector": [math.cos(angle), math.sin(angle)]} for item_id, angle in angles.items()}
    made.milvus.add("c1", made.stamp.describe(), rows)
    made.milvus.aliases["alias"] = "c1"
    yield made
    await made.engine.close()


async def test_the_engine_walks_text_pages_in_the_order_of_one_search(parts: Parts) -> None:
    whole = await parts.engine.search_text("a dog", 9, SearchFilter(), None, None)
    assert whole.next_page_token == ""  # a second page of 9 would pass the depth of 9
    ids: list[str] = []
    tokens = []
    token = ""
    for _ in range(3):
        page = await parts.engine.search_text("a dog", 3, SearchFilter(), None, None, page_token=token)
        ids += [h.id for h in page.hits]
        token = page.next_page_token
        tokens.append(token)
    assert ids == [h.id for h in whole.hits] and len(ids) == 9
    assert tokens[0] and tokens[1] and tokens[2] == ""  # the depth of 9 ends the walk
    assert ids.index("g") + 1 == ids.index("twin")  # equal scores: by id
    with pytest.raises(InvalidArgument, match="issued for another request"):
        await parts.engine.search_text("a cat", 3, SearchFilter(), None, None, page_token=tokens[0])
    with pytest.raises(InvalidArgument, match="issued for another request"):
        await parts.engine.search_image(png(), None, 3, SearchFilter(), None, False, None, page_token=tokens[0])
    with pytest.raises(InvalidArgument, match="maximum depth of 9"):
        await parts.engine.search_text("a dog", 7, SearchFilter(), None, None, page_token=tokens[0])
    with pytest.raises(InvalidArgument, match="not a token this server issued"):
        await parts.engine.search_text("a dog", 3, SearchFilter(), None, None, page_token=tokens[0][:-2] + "AA")


async def test_the_engine_walks_image_pages_by_id_and_refuses_a_token_after_an_alias_swap(parts: Parts) -> None:
    first = await parts.engine.search_image(None, "a", 4, SearchFilter(), None, True, None)
    assert "a" not in [h.id for h in first.hits] and first.next_page_token
    second = await parts.engine.search_image(None, "a", 4, SearchFilter(), None, True, None, page_token=first.next_page_token)
    whole = await parts.engine.search_image(None, "a", 8, SearchFilter(), None, True, None)
    assert [h.id for h in first.hits + second.hits] == [h.id for h in whole.hits]
    with pytest.raises(InvalidArgument, match="issued for another request"):  # exclude_self is part of the request
        await parts.engine.search_image(None, "a", 4, SearchFilter(), None, False, None, page_token=first.next_page_token)
    parts.milvus.add("c2", parts.stamp.describe(), dict(parts.milvus.collections["c1"]["rows"]))
    parts.milvus.aliases["alias"] = "c2"
    parts.milvus.collections.pop("c1")  # a full reindex swapped the alias and dropped the old collection
    with pytest.raises(FailedPrecondition, match=r"collection c1, now c2\): start again from the first page"):
        await parts.engine.search_image(None, "a", 4, SearchFilter(), None, True, None, page_token=first.next_page_token)
    uploaded = await parts.engine.search_image(png(), None, 4, SearchFilter(), None, False, None)
    with pytest.raises(InvalidArgument, match="issued for another request"):
        await parts.engine.search_image(png() + b"\0", None, 4, SearchFilter(), None, False, None, page_token=uploaded.next_page_token)
    assert (await parts.engine.search_image(png(), None, 4, SearchFilter(), None, False, None, page_token=uploaded.next_page_token)).hits
