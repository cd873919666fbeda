"""The gateway's entry point: ``python -m gateway.server`` or ``t2i serve``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.cache import EmbeddingCache
from gateway.engine import SearchEngine
from gateway.health import ReadinessMonitor
from gateway.index import HnswParams, ImageIndex, ModelStamp
from gateway.interceptors import ErrorMappingInterceptor
from gateway.metrics import serve_metrics
from gateway.servicers import EmbeddingServicer, IndexServicer, SearchServicer
from gateway.settings import Settings
from inference.images import ImageLimits
from inference.logs import configure_logging
from inference.triton_client import RetryPolicy, TritonEncoder
from text2image.v1 import text2image_pb2 as pb
from text2image.v1 import text2image_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)


def build_engine(settings: Settings) -> SearchEngine:
    """The engine for ``settings``: Triton encoder, Milvus index and limits."""
    encoder = TritonEncoder(settings.triton_url, settings.model_repository, RetryPolicy(timeout_s=settings.triton_timeout_s))
    manifest = encoder.manifest
    index = ImageIndex(
        settings.milvus_uri, settings.collection_alias, ModelStamp(manifest.model_id, manifest.checksum, manifest.dimension),
        timeout_s=settings.milvus_timeout_s, token=settings.milvus_token,
        hnsw=HnswParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef),
    )
    limits = ImageLimits(max_pixels=settings.max_image_pixels, min_side=settings.min_image_side, max_bytes=settings.max_message_mb * 2**20)
    return SearchEngine(encoder, index, settings.max_top_k, settings.max_batch, limits, EmbeddingCache(settings.embedding_cache_size), settings.alias_refresh_s)


async def serve(settings: Settings) -> None:
    """Run the gateway until SIGTERM or SIGINT, then drain and stop."""
    engine = build_engine(settings)
    max_bytes = settings.max_message_mb * 2**20
    server = grpc.aio.server(
        interceptors=[ErrorMappingInterceptor()],
        options=[("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)],
    )
    pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(engine, settings.request_timeout_s), server)
    pb_grpc.add_EmbeddingServiceServicer_to_server(EmbeddingServicer(engine, settings.request_timeout_s), server)
    pb_grpc.add_IndexServiceServicer_to_server(IndexServicer(engine, settings.request_timeout_s), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [pb.DESCRIPTOR.services_by_name[s].full_name for s in ("SearchService", "EmbeddingService", "IndexService")]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if server.add_insecure_port(settings.listen) == 0:
        raise RuntimeError(f"cannot listen on {settings.listen}")
    host = settings.listen.rsplit(":", 1)[0].strip("[]") or "127.0.0.1"
    serve_metrics(host, settings.metrics_port)
    await server.start()
    logger.info("gateway listening on %s (metrics on %s:%s), model %s, Triton %s, Milvus %s",
                settings.listen, host, settings.metrics_port, engine.model_id, settings.triton_url, settings.milvus_uri)
    monitor = ReadinessMonitor(engine, health_servicer, settings.health_interval_s)
    monitor_task = asyncio.create_task(monitor.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down: draining for up to %.1f s", settings.grace_s)
    monitor_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor_task
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_s)
    await engine.encoder.close()
    engine.index.close()
    logger.info("gateway stopped")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (``--triton-url`` for ``T2I_TRITON_URL``, and so on)."""
    for name, field in Settings.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=f"{field.description} (env T2I_{name.upper()})")
    parser.add_argument("--log-level", default="INFO", help="log level of the project's loggers")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings with the flags that were given overriding the environment."""
    overrides = {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> None:
    """Parse configuration and run the server."""
    parser = argparse.ArgumentParser(prog="gateway", description="text2image gRPC gateway")
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    configure_logging(args.log_level, structured=True)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
