"""``t2i duplicates``: the near-duplicate pairs of a running gateway's index (FindDuplicates), or their groups.

The scan goes in pages of ``--page-images`` images, one FindDuplicates stream each with its own
deadline (``--timeout``), each resuming from the previous one's ``next_page_token``, so a large
collection never needs one long call. Progress goes to stderr; pairs (or ``--groups``) to stdout,
as text or ``--json``. Groups are the connected components of the pairs (union-find): a chain of
near-duplicates a~b, b~c is one group even when a and c score below the threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from t2i.client import GatewayClient
from text2image.v1 import text2image_pb2 as pb

DEFAULT_PAGE_IMAGES = 5000


def add_arguments(command: argparse.ArgumentParser) -> None:
    """The flags of ``t2i duplicates`` (the gateway's address and TLS flags are added by the caller)."""
    command.add_argument("--min-score", type=float, default=None, help="lowest cosine of a pair, 0.5..1 (default: the server's, 0.95)")
    command.add_argument("--max-neighbors", type=int, default=0, help="most duplicates looked up per image, 1..1000 (default: the server's, 16)")
    command.add_argument("--label", action="append", default=[], help="compare only images with this label (repeatable: all of them)")
    command.add_argument("--uri-prefix", default="", help="compare only images whose uri starts with this")
    command.add_argument("--groups", action="store_true", help="print groups of near-duplicates (connected pairs) instead of pairs")
    command.add_argument("--json", action="store_true", help="print JSON: a list of {a, b, score}, or with --groups a list of {ids, pairs}")
    command.add_argument("--page-images", type=int, default=DEFAULT_PAGE_IMAGES, help="images scanned per call (each call resumes the previous one)")
    command.add_argument("--timeout", type=float, default=120.0, help="deadline of each call in seconds")
    command.add_argument("--quiet", action="store_true", help="no progress on stderr")


def scan(client: GatewayClient, args: argparse.Namespace) -> Iterator[pb.DuplicatePair]:
    """Every pair the gateway reports, page after page, with progress on stderr."""
    fields: dict[str, Any] = {"max_neighbors": args.max_neighbors, "max_images": max(args.page_images, 0)}
    if args.min_score is not None:
        fields["min_score"] = args.min_score
    if args.label or args.uri_prefix:
        fields["filter"] = pb.Filter(labels=pb.LabelFilter(all_of=args.label), uri_prefix=args.uri_prefix)
    token, done = "", 0
    while True:
        last: pb.FindDuplicatesResponse | None = None
        for chunk in client.find_duplicates(timeout_s=args.timeout, page_token=token, **fields):
            yield from chunk.pairs
            last = chunk
            if not args.quiet:
                print(f"\rscanned {done + chunk.scanned:,} of {chunk.total:,} images", end="", file=sys.stderr, flush=True)
        if last is None or not last.next_page_token:
            if not args.quiet:
                print(file=sys.stderr)
            return
        token, done = last.next_page_token, done + last.scanned


def groups(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The connected components of ``pairs`` (union-find), each sorted, largest first (ties by first id)."""
    parent: dict[str, str] = {}

    def root(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]  # path halving
            item = parent[item]
        return item

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for item in parent:
        members.setdefault(root(item), []).append(item)
    return sorted((sorted(group) for group in members.values()), key=lambda group: (-len(group), group[0]))


def render(pairs: list[pb.DuplicatePair], as_groups: bool, as_json: bool) -> str:
    """What ``t2i duplicates`` prints for ``pairs``."""
    if as_groups:
        found = groups((p.a, p.b) for p in pairs)
        member_of = {item: n for n, group in enumerate(found) for item in group}
        inside: list[list[pb.DuplicatePair]] = [[] for _ in found]
        for pair in pairs:
            inside[member_of[pair.a]].append(pair)
        if as_json:
            return json.dumps([{"ids": group, "pairs": [[p.a, p.b, round(p.score, 6)] for p in inside[n]]} for n, group in enumerate(found)], indent=1)
        lines = [f"{len(found)} groups of near-duplicates ({len(pairs)} pairs)"]
        for n, group in enumerate(found):
            low = min(p.score for p in inside[n])
            lines.append(f"  {n + 1:>3}. {len(group)} images, lowest pair score {low:.4f}: " + " ".join(group))
        return "\n".join(lines)
    if as_json:
        return json.dumps([{"a": p.a, "b": p.b, "score": round(p.score, 6)} for p in pairs], indent=1)
    lines = [f"{len(pairs)} pairs of near-duplicates"]
    lines += [f"  {p.score:.4f}  {p.a}  {p.b}" for p in sorted(pairs, key=lambda p: (-p.score, p.a, p.b))]
    return "\n".join(lines)


def command(args: argparse.Namespace, client: GatewayClient) -> int:
    """Run ``t2i duplicates``; gRPC errors propagate to the CLI's handler (one line, exit 2)."""
    try:
        pairs = list(scan(client, args))
    finally:
        client.close()
    print(render(pairs, args.groups, args.json))
    return 0
