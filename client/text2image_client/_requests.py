"""Request messages from the client methods' arguments (shared by ``Client`` and ``AsyncClient``)."""

from __future__ import annotations

from collections.abc import Sequence

from text2image.v1 import text2image_pb2 as pb
from text2image_client.types import Cutoff, Filter, ImageItem, Term, cutoff_value, filter_proto, term


def search_text(
    query: str, top_k: int, filter: Filter | pb.Filter | None, min_score: float | None, cutoff: Cutoff | None, page_token: str
) -> pb.SearchTextRequest:
    """A ``SearchTextRequest``."""
    return pb.SearchTextRequest(
        query=query,
        top_k=top_k,
        filter=filter_proto(filter),
        min_score=min_score,
        cutoff=cutoff_value(cutoff),
        page_token=page_token,
    )


def search_image(
    image: bytes | None,
    id: str | None,
    top_k: int,
    filter: Filter | pb.Filter | None,
    min_score: float | None,
    exclude_self: bool,
    cutoff: Cutoff | None,
    page_token: str,
) -> pb.SearchImageRequest:
    """A ``SearchImageRequest`` by image bytes or by the id of an indexed image (exactly one)."""
    if (image is None) == (id is None):
        raise ValueError("search_image takes exactly one of image (bytes) or id (an indexed image's id)")
    request = pb.SearchImageRequest(
        top_k=top_k,
        filter=filter_proto(filter),
        min_score=min_score,
        exclude_self=exclude_self,
        cutoff=cutoff_value(cutoff),
        page_token=page_token,
    )
    if image is not None:
        request.image = image
    else:
        request.id = id or ""
    return request


def search(
    terms: Sequence[Term | str] | Term | str,
    top_k: int,
    filter: Filter | pb.Filter | None,
    min_score: float | None,
    cutoff: Cutoff | None,
    exclude_ids: bool,
    page_token: str,
) -> pb.SearchRequest:
    """A ``SearchRequest`` of weighted terms (a string is a text term of weight 1)."""
    listed = [terms] if isinstance(terms, Term | str) else list(terms)
    return pb.SearchRequest(
        terms=[term(value).to_proto() for value in listed],
        top_k=top_k,
        filter=filter_proto(filter),
        min_score=min_score,
        cutoff=cutoff_value(cutoff),
        exclude_ids=exclude_ids,
        page_token=page_token,
    )


def find_duplicates(
    min_score: float | None, filter: Filter | pb.Filter | None, max_neighbors: int, max_images: int, page_token: str
) -> pb.FindDuplicatesRequest:
    """A ``FindDuplicatesRequest``."""
    return pb.FindDuplicatesRequest(min_score=min_score, filter=filter_proto(filter), max_neighbors=max_neighbors, max_images=max_images, page_token=page_token)


def upsert(items: Sequence[ImageItem | pb.ImageItem]) -> pb.UpsertImagesRequest:
    """An ``UpsertImagesRequest``."""
    return pb.UpsertImagesRequest(items=[item.to_proto() if isinstance(item, ImageItem) else item for item in items])


def strings(values: Sequence[str] | str, what: str) -> list[str]:
    """A list of strings; a lone string is refused (it would be sent as its characters)."""
    if isinstance(values, str):
        raise TypeError(f"{what} takes a list of strings; got the string {values[:40]!r} (wrap it: [{values[:40]!r}])")
    return list(values)


def page_sizes(page_size: int, max_results: int | None) -> tuple[int, int | None]:
    """Checked ``page_size`` (at least 1) and ``max_results`` (``None``: until the last page)."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1; got {page_size}")
    if max_results is not None and max_results < 0:
        raise ValueError(f"max_results must be 0 or more; got {max_results}")
    return page_size, max_results


def next_top_k(page_size: int, max_results: int | None, seen: int) -> int:
    """How many hits to ask for next (0: stop)."""
    return page_size if max_results is None else min(page_size, max_results - seen)
