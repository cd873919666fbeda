"""Bad input for the chaos campaign: mutated requests of every RPC, slow clients, a flood of connections.

``bench.chaos`` runs these against the local stack and checks that no answer is INTERNAL or UNKNOWN.
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from bench.report import ROOT
from t2i.client import open_channel
from text2image.v1 import text2image_pb2 as pb

ODD = ["", "\u0000", "\u202e" * 50, "🐕" * 3000, "ǅ" * 100, "\ud7ff", "x" * 20_000, " \t\n" * 500, "%", "_" * 64, "id\u0000null"]


def sample_requests(rng: random.Random) -> dict[str, list[bytes]]:
    """Valid and strange requests of every RPC, serialized."""
    image = (ROOT / "docs" / "web-search.png").read_bytes()[:20_000]
    text = rng.choice(ODD)
    labels = pb.LabelFilter(all_of=[rng.choice(ODD)], any_of=[text], none_of=["%"])
    messages: dict[str, list[Any]] = {
        "/text2image.v1.SearchService/SearchText": [
            pb.SearchTextRequest(query=t, top_k=rng.choice([0, 1, 5, 10**6]), filter=pb.Filter(labels=labels)) for t in ODD
        ],
        "/text2image.v1.SearchService/SearchImage": [
            pb.SearchImageRequest(image=image, top_k=5),
            pb.SearchImageRequest(id=text, top_k=3),
            pb.SearchImageRequest(image=b"\x89PNG" + b"\0" * 64),
        ],
        "/text2image.v1.EmbeddingService/EmbedText": [pb.EmbedTextRequest(texts=ODD), pb.EmbedTextRequest(texts=[])],
        "/text2image.v1.EmbeddingService/EmbedImage": [pb.EmbedImageRequest(images=[image, b"", b"GIF89a"])],
        "/text2image.v1.IndexService/UpsertImages": [pb.UpsertImagesRequest(items=[pb.ImageItem(id=t, content=image, uri=t, labels=[t]) for t in ODD[:5]])],
        "/text2image.v1.IndexService/DeleteImages": [pb.DeleteImagesRequest(ids=["chaos-none", text])],
        "/text2image.v1.IndexService/GetIndexInfo": [pb.GetIndexInfoRequest()],
        "/text2image.v1.IndexService/GetImages": [pb.GetImagesRequest(ids=ODD)],
        "/text2image.v1.IndexService/ListLabels": [pb.ListLabelsRequest(max_rows=rng.choice([-1, 0, 2**31 - 1]))],
    }
    return {method: [m.SerializeToString() for m in items] for method, items in messages.items()}


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


def fuzz(address: str, token: str, cases: int, seed: int) -> dict[str, Any]:
    """``cases`` mutated requests spread over every RPC, as raw bytes; statuses counted by method."""
    rng = random.Random(seed)
    by_method: dict[str, Counter[str]] = {}
    samples = sample_requests(rng)
    channel = open_channel(address, token)
    try:
        for n in range(cases):
            method = list(samples)[n % len(samples)]
            data = rng.choice(samples[method])
            payload = data if n < len(samples) else mutate(data, rng)
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            try:
                call(payload, timeout=20)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            by_method.setdefault(method.rsplit("/", 1)[1], Counter())[code] += 1
    finally:
        channel.close()
    totals = sum(by_method.values(), Counter())
    return {"cases": cases, "codes": dict(totals), "by_method": {m: dict(c) for m, c in by_method.items()}}


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
            channel.unary_unary("/text2image.v1.IndexService/GetIndexInfo", request_serializer=None, response_deserializer=None)(b"", timeout=10)
            codes["OK"] += 1
        except grpc.RpcError as exc:
            codes[exc.code().name] += 1
        finally:
            channel.close()
    return {"connections": count, "codes": dict(codes)}
