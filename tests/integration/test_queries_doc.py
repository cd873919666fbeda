"""docs/queries.md's grpcurl requests, sent to the real stack: what the docs offer, ran.

grpcurl is not installed here, so each ``grpcurl ... -d '<json>' ... ADDRESS SERVICE/METHOD`` of the
page is sent the way grpcurl sends it: the JSON parsed into the method's request message
(``google.protobuf.json_format``, the proto3 JSON mapping grpcurl uses), over the generated stubs, with
the session stack's read token. Each must answer OK, and what the page says of its answer holds. The
page example's ``"'"$PAGE"'"`` is the previous answer's ``nextPageToken``, as its ``jq`` line takes it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, message_factory
from PIL import Image

from devstack.stack import LocalStack
from t2i.client import GatewayClient
from tests.support.stack import PROJECT_ROOT, assert_serving
from text2image.v1 import text2image_pb2 as pb

PAGE = PROJECT_ROOT / "docs" / "queries.md"
REQUEST = re.compile(r"grpcurl -plaintext -H \"authorization: Bearer \$TOKEN\"\s*(?:\\\s*)?-d '(\{.*?\})'\s*(?:\\\s*)?127\.0\.0\.1:50051 ([\w.]+)/(\w+)", re.S)
SHELL_PAGE = "'\"$PAGE\"'"
PLANTED = "beach/0001.jpg"  # the id the page's image-and-text example names
OTHERS = [f"docs/{n:02d}.png" for n in range(14)]  # enough for the page example's two pages of 10


def requests() -> list[tuple[str, str, str]]:
    """``(json, service, method)`` of every grpcurl call on the page, in order; each call must be one of them."""
    text = PAGE.read_text()
    found = REQUEST.findall(text)
    assert len(found) == text.count("grpcurl -plaintext") and found, "a grpcurl line of docs/queries.md is not of the form this test sends"
    return found


def png(colour: str, width: int, height: int, stripe: int) -> bytes:
    """A PNG of ``colour`` with a white stripe ``stripe`` pixels from the top."""
    image = Image.new("RGB", (width * 3, height * 3), colour)
    image.paste((255, 255, 255), (0, stripe, width * 3, stripe + 4))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def planted(client: GatewayClient) -> Iterator[None]:
    """The page's beach image and 14 others in the session collection (deleted after)."""
    colours = ["red", "blue", "green", "yellow", "white", "black", "orange"]
    items = [pb.ImageItem(id=PLANTED, content=png("red", 20, 20, 20), uri="/docs/beach.jpg")]
    items += [pb.ImageItem(id=i, content=png(colours[n % 7], 8 + n, 30 - n, 12 + n), uri=f"/docs/{i}") for n, i in enumerate(OTHERS)]
    answer = client.index.UpsertImages(pb.UpsertImagesRequest(items=items), timeout=120)
    assert answer.failed == 0, answer
    yield
    client.index.DeleteImages(pb.DeleteImagesRequest(ids=[PLANTED, *OTHERS]), timeout=60)


def send(channel: grpc.Channel, token: str, body: str, service: str, method: str) -> list[dict[str, Any]]:
    """The answers (one per streamed message) to ``body`` sent as grpcurl would, as proto3 JSON."""
    descriptor = pb.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods_by_name[method]
    request = json_format.Parse(body, message_factory.GetMessageClass(descriptor.input_type)())
    response_type = message_factory.GetMessageClass(descriptor.output_type)
    path, metadata = f"/{service}/{method}", (("authorization", f"Bearer {token}"),)
    if descriptor.server_streaming:
        call = channel.unary_stream(path, request_serializer=type(request).SerializeToString, response_deserializer=response_type.FromString)
        return [json_format.MessageToDict(message) for message in call(request, metadata=metadata, timeout=120)]
    unary = channel.unary_unary(path, request_serializer=type(request).SerializeToString, response_deserializer=response_type.FromString)
    return [json_format.MessageToDict(unary(request, metadata=metadata, timeout=60))]


@pytest.mark.integration
def test_every_grpcurl_request_of_the_queries_page_answers_as_the_page_says(stack: LocalStack, planted: None) -> None:
    token = stack.token("read")
    answers: list[tuple[str, list[dict[str, Any]]]] = []
    with grpc.insecure_channel(stack.gateway_address) as channel:
        for written, service, method in requests():
            body = written
            if SHELL_PAGE in written:
                previous = answers[-1][1][0]
                assert previous.get("nextPageToken"), "the page's first request must leave a next page"
                body = written.replace(SHELL_PAGE, str(previous["nextPageToken"]))
            answers.append((method, send(channel, token, body, service, method)))
    methods = [method for method, _ in answers]
    assert methods == ["Search", "Search", "SearchBatch", "SearchText", "SearchText", "SearchText", "FindDuplicates"], methods

    negative, image_and_text, batch = (answer[0] for _, answer in answers[:3])
    assert len(negative["hits"]) == 5
    assert PLANTED not in [hit["id"] for hit in image_and_text["hits"]]  # exclude_ids
    first, second = batch["results"]
    assert len(first["response"]["hits"]) == 3  # the page: the first search answers
    error = second["error"]
    assert (error["code"], error["status"]) == (3, "INVALID_ARGUMENT") and error["message"].startswith(
        "terms[0].vector: has 2 values; the collection's model makes vectors of "
    )

    page1, page2 = (answer[0] for _, answer in answers[3:5])
    ids1, ids2 = ([hit["id"] for hit in page.get("hits", [])] for page in (page1, page2))
    assert ids1 and not set(ids1) & set(ids2)  # the second page goes on after the first
    assert answers[6][1], "FindDuplicates streams at least one message (its progress)"
    assert_serving(stack)
