"""Bad input for the chaos campaign: mutated requests of every RPC, slow clients, a flood of connections.

``bench.chaos`` runs these against the local stack and checks that no answer is INTERNAL or UNKNOWN.
The fuzz starts from seeds that are valid requests (each is sent unmutated first, and the campaign
fails unless every one answers OK), so that a mutation changes one thing in a request that the
handlers would otherwise serve. Two kinds of mutation: an odd value in one field of the message
(the strange strings, integers, floats and bytes of ``ODD_*``), and changes to the serialized bytes
(``mutate``); some cases get both.
"""

from __future__ import annotations

import io
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from PIL import Image

from t2i.client import open_channel
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc

ODD = ["", "\u0000", "\u202e" * 50, "🐕" * 3000, "ǅ" * 100, "\ud7ff", "x" * 20_000, " \t\n" * 500, "%", "_" * 64, "id\u0000null"]
ODD_INTS = (0, -1, 10**6, 2**31 - 1, -(2**31))
ODD_FLOATS = (float("nan"), float("inf"), -2.0, 2.0)
ODD_BYTES = (b"", b"\x89PNG" + b"\0" * 64, b"GIF89a", bytes(range(256)) * 4)
SEED_IDS = ("chaos-seed-1", "chaos-seed-2")
SERVICE = "/text2image.v1."
STREAMING = frozenset({f"{SERVICE}SearchService/FindDuplicates"})  # server-streaming RPCs: sent with unary_stream, every message read


def sample_image(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small valid image (a coloured square on a gradient) in ``fmt`` ("PNG", "JPEG")."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste((200, 30, 30), (8, 8, 8 + size[1] // 2, 8 + size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def seed_requests(dimension: int = 2) -> dict[str, list[Message]]:
    """Valid requests of every RPC, in the order they are first sent: the upsert first, so that the searches by id find its rows.

    ``dimension`` is the served model's (the vector terms of Search), as ``fuzz`` reads it from GetIndexInfo.
    """
    png, jpeg = sample_image("PNG"), sample_image("JPEG")
    vector = pb.Vector(values=[1.0] + [0.5] * (dimension - 1))
    labels = pb.LabelFilter(all_of=["chaos"], any_of=["chaos", "jpeg"], none_of=["never"])
    first, second = SEED_IDS
    metadata = pb.MetadataFilter(
        width=pb.Int64Range(min=16, max=4096),
        height=pb.Int64Range(max=4096),
        bytes=pb.Int64Range(min=1),
        formats=["png", "JPEG"],
        modified_time=pb.TimeRange(since={"seconds": 0}),
        capture_time=pb.TimeRange(until={"seconds": 4_000_000_000}),
    )
    return {
        f"{SERVICE}IndexService/UpsertImages": [
            pb.UpsertImagesRequest(
                items=[
                    pb.ImageItem(id=first, content=png, uri=f"mem://{first}", labels=["chaos"], modified_time={"seconds": 1_600_000_000, "nanos": 500}),
                    pb.ImageItem(id=second, content=jpeg, uri=f"mem://{second}", labels=["chaos", "jpeg"]),
                ]
            )
        ],
        f"{SERVICE}SearchService/SearchText": [
            pb.SearchTextRequest(query="a red square on a grey background", top_k=5),
            pb.SearchTextRequest(query="two dogs on a beach", top_k=1, filter=pb.Filter(labels=labels)),
            pb.SearchTextRequest(query="a photo of the sea", top_k=10, min_score=-0.5, filter=pb.Filter(ids=list(SEED_IDS), uri_prefix="mem://")),
            pb.SearchTextRequest(query="a red square", top_k=1, filter=pb.Filter(ids=list(SEED_IDS))),  # a first page: its next page is a seed too
            pb.SearchTextRequest(query="a small picture", top_k=5, filter=pb.Filter(metadata=metadata)),
        ],
        f"{SERVICE}SearchService/SearchImage": [
            pb.SearchImageRequest(image=png, top_k=5),
            pb.SearchImageRequest(id=first, top_k=3, exclude_self=True),
            pb.SearchImageRequest(image=jpeg, top_k=2, filter=pb.Filter(labels=labels)),
            pb.SearchImageRequest(id=second, top_k=1, filter=pb.Filter(ids=list(SEED_IDS))),  # a first page: its next page is a seed too
        ],
        f"{SERVICE}SearchService/Search": [*terms_seeds(png, vector, labels)],
        f"{SERVICE}SearchService/SearchBatch": [
            pb.SearchBatchRequest(requests=[*terms_seeds(png, vector, labels), pb.SearchRequest(terms=[pb.QueryTerm(id="chaos-seed-absent")], top_k=1)])
        ],
        f"{SERVICE}SearchService/FindDuplicates": [
            pb.FindDuplicatesRequest(),
            pb.FindDuplicatesRequest(min_score=0.5, max_neighbors=4, filter=pb.Filter(labels=labels)),
            pb.FindDuplicatesRequest(min_score=0.5, max_images=1, filter=pb.Filter(ids=list(SEED_IDS))),  # a first page: its next page is a seed too
        ],
        f"{SERVICE}EmbeddingService/EmbedText": [pb.EmbedTextRequest(texts=["a red car", "two cats on a sofa"])],
        f"{SERVICE}EmbeddingService/EmbedImage": [pb.EmbedImageRequest(images=[png, jpeg])],
        f"{SERVICE}IndexService/DeleteImages": [pb.DeleteImagesRequest(ids=["chaos-seed-absent"])],
        f"{SERVICE}IndexService/GetIndexInfo": [pb.GetIndexInfoRequest()],
        f"{SERVICE}IndexService/GetImages": [pb.GetImagesRequest(ids=[first, "chaos-seed-absent"])],
        f"{SERVICE}IndexService/ListLabels": [pb.ListLabelsRequest(max_rows=100)],
    }


def terms_seeds(png: bytes, vector: pb.Vector, labels: pb.LabelFilter) -> list[pb.SearchRequest]:
    """Search requests with each kind of term (text, image, id, vector), and all four weighted (no two cancel out, on any model)."""
    first, _ = SEED_IDS
    return [
        pb.SearchRequest(terms=[pb.QueryTerm(text="a red square")], top_k=5),
        pb.SearchRequest(terms=[pb.QueryTerm(image=png), pb.QueryTerm(text="on grass", weight=-0.5)], top_k=2, filter=pb.Filter(labels=labels)),
        pb.SearchRequest(terms=[pb.QueryTerm(id=first)], top_k=3, exclude_ids=True, min_score=-1.0),
        pb.SearchRequest(terms=[pb.QueryTerm(vector=vector)], top_k=2),
        pb.SearchRequest(
            terms=[
                pb.QueryTerm(text="a red square", weight=1.0),
                pb.QueryTerm(image=png, weight=-0.5),
                pb.QueryTerm(id=first, weight=0.75),
                pb.QueryTerm(vector=vector, weight=0.25),
            ],
            top_k=4,
            cutoff=pb.CUTOFF_AUTOCUT,
        ),
    ]


def leaves(message: Message) -> list[tuple[Message, FieldDescriptor]]:
    """Every scalar or repeated-scalar field of ``message`` and of the messages inside it, as (owner, field)."""
    found: list[tuple[Message, FieldDescriptor]] = []
    for field in message.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            inner = getattr(message, field.name)
            for item in inner if field.is_repeated else [inner]:
                found += leaves(item)
        else:
            found.append((message, cast(FieldDescriptor, field)))  # the upb descriptor is the same type at run time
    return found


def odd_value(field: FieldDescriptor, rng: random.Random) -> Any:
    """A strange value of ``field``'s type: an odd string, an out-of-range integer, NaN, broken bytes."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return rng.choice(ODD)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return rng.choice(ODD_BYTES)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return rng.choice(ODD_FLOATS)
    if field.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64):
        return abs(rng.choice(ODD_INTS))
    return rng.choice(ODD_INTS)


def with_odd_value(message: Message, rng: random.Random) -> Message | None:
    """A copy of ``message`` with one field set to an odd value (a repeated field replaced, extended or flooded); None without fields."""
    copy = type(message)()
    copy.CopyFrom(message)
    fields = leaves(copy)
    if not fields:
        return None
    owner, field = rng.choice(fields)
    value = odd_value(field, rng)
    if field.is_repeated:
        container = getattr(owner, field.name)
        how = rng.randrange(3)
        if how == 0:
            del container[:]
            container.append(value)
        elif how == 1:
            container.append(value)
        else:  # more entries than any limit allows, each small
            del container[:]
            container.extend([b"x" if field.type == FieldDescriptor.TYPE_BYTES else "x"] * rng.choice([65, 1000]))
    else:
        for _ in range(8):  # a value equal to the field's own (an unset string set to "") would change nothing: draw again
            if value != getattr(owner, field.name):
                break
            value = odd_value(field, rng)
        setattr(owner, field.name, value)
    return copy


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random mutation of a serialized message."""
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    buffer = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # flip bits
        for _ in range(rng.randrange(1, 8)):
            buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate
        del buffer[rng.randrange(len(buffer)) :]
    elif kind == 2:  # insert random bytes (invalid UTF-8 inside strings, odd tags)
        at = rng.randrange(len(buffer) + 1)
        buffer[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
    elif kind == 3:  # a string field of invalid UTF-8 (field 1, wire type 2)
        buffer = bytearray(b"\x0a\x04\xff\xfe\xc3\x28") + buffer
    elif kind == 4:  # an absurd length prefix
        buffer = bytearray(b"\x0a\xff\xff\xff\xff\x0f") + buffer
    else:  # duplicate the message (repeated fields doubled, scalars overwritten)
        buffer += data
    return bytes(buffer)


def mutated(message: Message, rng: random.Random) -> tuple[str, bytes]:
    """One fuzz case from a seed: ("odd value", "bytes" or "odd value + bytes", the payload)."""
    draw = rng.random()
    odd = with_odd_value(message, rng) if draw < 0.6 else None
    if odd is None:
        return "bytes", mutate(message.SerializeToString(), rng)
    if draw < 0.45:
        return "odd value", odd.SerializeToString()
    return "odd value + bytes", mutate(odd.SerializeToString(), rng)


def next_page(message: Message, answer: bytes) -> Message | None:
    """The request for the next page of a search seed whose answer holds a ``next_page_token`` (None otherwise).

    A valid token comes only from a live answer (it names the collection that answered), so the
    fuzz makes these seeds as it goes; mutations of the seeds then reach the token's checks.
    """
    if isinstance(message, pb.FindDuplicatesRequest):
        token = pb.FindDuplicatesResponse.FromString(answer).next_page_token  # the answer is the stream's last message
    elif isinstance(message, (pb.SearchTextRequest, pb.SearchImageRequest)):
        token = pb.SearchResponse.FromString(answer).next_page_token
    else:
        return None
    if not token or message.page_token:
        return None
    following = type(message).FromString(message.SerializeToString())
    following.page_token = token
    return following


def served_dimension(channel: grpc.Channel) -> int:
    """The dimension of the served model (GetIndexInfo), for the seeds' vector terms; 2 when it does not answer."""
    try:
        return pb_grpc.IndexServiceStub(channel).GetIndexInfo(pb.GetIndexInfoRequest(), timeout=20).dimension or 2
    except grpc.RpcError:
        return 2


def fuzz(address: str, token: str, cases: int, seed: int) -> dict[str, Any]:
    """Every seed unmutated (each must answer OK), then ``cases`` mutated ones spread over every RPC, as raw bytes.

    Statuses are counted by method and by kind of mutation; ``seeds.not_ok`` lists the seeds that
    did not answer OK (``bench.chaos`` counts each as a broken invariant).
    """
    rng = random.Random(seed)
    channel = open_channel(address, token)
    seeds = seed_requests(served_dimension(channel))

    answers: list[bytes] = []

    def send(method: str, payload: bytes) -> tuple[str, str]:
        try:
            if method in STREAMING:
                stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
                answers[:] = list(stream(payload, timeout=20))[-1:]  # every message read: an error after the first ones still counts
                return "OK", ""
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            answers[:] = [call(payload, timeout=20)]
            return "OK", ""
        except grpc.RpcError as exc:
            return exc.code().name, str(exc.details())[:200]

    by_method: dict[str, Counter[str]] = {}
    by_kind: dict[str, Counter[str]] = {}
    seed_codes: Counter[str] = Counter()
    not_ok = []
    pages = 0
    try:
        for method, messages in seeds.items():
            for number, message in enumerate(messages):
                code, detail = send(method, message.SerializeToString())
                seed_codes[code] += 1
                if code != "OK":
                    not_ok.append({"method": method.rsplit("/", 1)[1], "seed": number, "code": code, "detail": detail})
                elif (following := next_page(message, answers[0])) is not None:
                    messages.append(following)  # sent (and must answer OK) after this RPC's other seeds, and mutated as they are
                    pages += 1
        methods = list(seeds)
        for n in range(cases):
            method = methods[n % len(methods)]
            kind, payload = mutated(rng.choice(seeds[method]), rng)
            code, _ = send(method, payload)
            by_method.setdefault(method.rsplit("/", 1)[1], Counter())[code] += 1
            by_kind.setdefault(kind, Counter())[code] += 1
    finally:
        channel.close()
    totals = sum(by_method.values(), Counter())
    return {
        "seeds": {"sent": sum(seed_codes.values()), "codes": dict(seed_codes), "not_ok": not_ok, "pages": pages},
        "cases": cases,
        "codes": dict(totals),
        "by_method": {m: dict(c) for m, c in by_method.items()},
        "by_kind": {k: dict(c) for k, c in by_kind.items()},
    }


def slow_clients(address: str, count: int, hold_s: float, probe: Callable[[], bool]) -> dict[str, Any]:
    """``count`` connections that send half an HTTP/2 preface and hang; the service must keep answering meanwhile."""
    host, port = address.rsplit(":", 1)
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"PRI * HTTP/2.0\r\n")  # and nothing more
            sockets.append(sock)
        answered, start = 0, time.monotonic()
        while time.monotonic() - start < hold_s:
            answered += probe()
        return {"connections": count, "held_s": hold_s, "answered_meanwhile": answered}
    finally:
        for sock in sockets:
            sock.close()


def connection_flood(address: str, token: str, count: int) -> dict[str, Any]:
    """``count`` new connections, each making one GetIndexInfo call and closing."""
    codes: Counter[str] = Counter()
    for _ in range(count):
        channel = open_channel(address, token, options=[("grpc.use_local_subchannel_pool", 1)])
        try:
            info: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/text2image.v1.IndexService/GetIndexInfo", request_serializer=None, response_deserializer=None
            )
            info(b"", timeout=10)
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1
        finally:
            channel.close()
    return {"connections": count, "codes": dict(codes)}
