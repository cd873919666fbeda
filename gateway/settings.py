"""Gateway settings from ``T2I_*`` environment variables, overridable by command-line flags."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything the gateway and the reindex job need to find their peers and limits."""

    model_config = SettingsConfigDict(env_prefix="T2I_", extra="ignore")

    listen: str = Field("127.0.0.1:50051", description="gRPC listen address host:port")
    metrics_port: int = Field(9464, description="Prometheus metrics port on the listen host; 0 disables")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address host:port")
    model_repository: Path = Field(PROJECT_ROOT / "model_repository", description="exported repository (manifest, tokenizer)")
    milvus_uri: str = Field("http://127.0.0.1:19530", description="Milvus server URI")
    milvus_token: str = Field("", description="Milvus token (user:password) when auth is on")
    collection_alias: str = Field("t2i_images", description="alias that queries go through")
    triton_timeout_s: float = Field(5.0, gt=0, description="timeout of one Triton call")
    milvus_timeout_s: float = Field(5.0, gt=0, description="timeout of one Milvus call")
    request_timeout_s: float = Field(15.0, gt=0, description="server-side limit when the client sets no deadline")
    max_top_k: int = Field(1000, ge=1, le=16384, description="largest top_k accepted")
    max_batch: int = Field(64, ge=1, description="most items in one Embed/Upsert/Delete request")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest width*height of an image")
    min_image_side: int = Field(16, ge=1, description="smallest width or height of an image")
    max_message_mb: int = Field(64, ge=1, description="largest gRPC request in MiB")
    hnsw_m: int = Field(16, ge=4, description="HNSW M for new collections")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW efConstruction for new collections")
    hnsw_ef: int = Field(64, ge=1, description="HNSW ef at search time (raised to top_k when smaller)")
    alias_refresh_s: float = Field(1.0, ge=0, description="how long searches reuse the alias's collection before asking Milvus again (0: every request)")
    embedding_cache_size: int = Field(10000, ge=0, description="query embeddings kept in the LRU cache (0 disables it)")
    health_interval_s: float = Field(2.0, gt=0, description="how often readiness is re-checked")
    grace_s: float = Field(5.0, ge=0, description="time in-flight RPCs get on shutdown")
