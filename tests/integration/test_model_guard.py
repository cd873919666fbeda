"""A collection filled by another model is refused, clearly, by the gateway and the reindex job."""

from __future__ import annotations

from pathlib import Path

import grpc

from core.index import ImageIndex
from core.records import ModelStamp
from devstack.stack import LocalStack
from t2i.client import GatewayClient
from tests.support.polling import wait_for
from tests.support.stack import run_t2i


def test_other_model_is_refused(stack: LocalStack, index: ImageIndex, client: GatewayClient, tmp_path: Path) -> None:
    ours = index.ensure_active()
    other = ImageIndex(stack.milvus_uri, stack.alias, ModelStamp("someone/else-clip", "f" * 64, 32), timeout_s=10, token=stack.milvus_token)
    foreign = other.new_collection()
    index.swap_alias(foreign)
    try:

        def refused() -> bool:
            try:
                client.search_text("red car", top_k=3)
            except grpc.RpcError as exc:
                return (
                    exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                    and "someone/else-clip" in (exc.details() or "")
                    and "reindex --full" in (exc.details() or "")
                )
            return False

        wait_for(refused, 10, "FAILED_PRECONDITION for a foreign collection")
        (tmp_path / "one").mkdir()
        result = run_t2i(stack, "reindex", str(tmp_path / "one"))
        assert result.returncode == 2 and "someone/else-clip" in result.stderr and "reindex --full" in result.stderr
    finally:
        index.swap_alias(ours)
        index.drop(foreign)
        other.close()
    wait_for(lambda: client.search_text("red car", top_k=1).collection == ours, 10, "queries to go to our collection again")
