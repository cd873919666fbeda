"""Settings from ``T2I_*`` environment variables (flags of the entry points override them).

``Settings`` is what every component needs to find its peers and its limits: the gateway, the
reindex job and the local stack. ``GatewaySettings`` adds what only the gRPC server uses. Paths
are relative to the working directory unless given absolute (``make`` runs from the project root),
so an installed package never guesses where a checkout lies.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


def add_flags(parser: argparse.ArgumentParser, settings: type[BaseSettings]) -> None:
    """One flag per field of ``settings`` (``--triton-url`` for ``T2I_TRITON_URL``, and so on)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    for name, field in settings.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=f"{field.description} (env {prefix}{name.upper()})")


def from_flags(settings: type[S], args: argparse.Namespace) -> S:
    """``settings`` from the environment, with the flags that were given overriding it."""
    return settings(**{name: getattr(args, name) for name in settings.model_fields if getattr(args, name, None) is not None})


def split_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets allowed) as ``(host, port)``; an empty host is ``default_host``."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or default_host, int(port)


def redact_uri(uri: str) -> str:
    """``uri`` without the credentials a ``scheme://user:password@host`` URI carries (for logs and error messages)."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS client: the CA that signs the server (None: the system's roots), and a certificate and key for mutual TLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class Settings(BaseSettings):
    """Peers, model repository, collection alias, timeouts and limits."""

    model_config = SettingsConfigDict(env_prefix="T2I_", extra="ignore")

    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address host:port")
    model_repository: Path = Field(Path("model_repository"), description="exported repository (manifest, tokenizer)")
    milvus_uri: str = Field("http://127.0.0.1:19530", description="Milvus server URI")
    milvus_token: str = Field("", description="Milvus token (user:password) when auth is on")
    milvus_token_file: Path | None = Field(None, description="file that holds the Milvus token (a mounted Secret); read when T2I_MILVUS_TOKEN is empty")
    milvus_tls_ca: Path | None = Field(None, description="CA bundle that signs Milvus's certificate (with an https:// T2I_MILVUS_URI)")
    milvus_tls_cert: Path | None = Field(None, description="client certificate for Milvus mutual TLS")
    milvus_tls_key: Path | None = Field(None, description="client key for Milvus mutual TLS")
    triton_tls: bool = Field(False, description="talk to Triton over TLS")
    triton_tls_ca: Path | None = Field(None, description="CA bundle that signs Triton's certificate (default: the system's roots)")
    triton_tls_cert: Path | None = Field(None, description="client certificate for Triton mutual TLS")
    triton_tls_key: Path | None = Field(None, description="client key for Triton mutual TLS")
    collection_alias: str = Field("t2i_images", description="alias that queries go through")
    triton_timeout_s: float = Field(5.0, gt=0, description="timeout of one Triton call")
    milvus_timeout_s: float = Field(5.0, gt=0, description="timeout of one Milvus call")
    milvus_retry_s: float = Field(
        120.0, ge=0, description="batch jobs: how long an idempotent Milvus call is retried through an outage before the job fails (the gateway never retries)"
    )
    read_retry_s: float = Field(
        10.0, ge=0, description="reindex: how long a file read that met an I/O or network error is retried before the file counts as failed (its row is kept)"
    )
    milvus_threads: int = Field(4, ge=1, description="threads that run blocking Milvus calls")
    decode_threads: int = Field(2, ge=1, description="threads that decode images in the gateway")
    max_batch: int = Field(64, ge=1, description="most items in one Embed/Upsert/Delete request")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest width*height of an image")
    min_image_side: int = Field(16, ge=1, description="smallest width or height of an image")
    max_message_mb: int = Field(64, ge=1, description="largest gRPC request (and image file) in MiB")
    hnsw_m: int = Field(16, ge=4, description="HNSW M for new collections")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW efConstruction for new collections")
    hnsw_ef: int = Field(64, ge=1, description="HNSW ef at search time (raised to top_k when smaller)")
    otlp_endpoint: str = Field("", description="OpenTelemetry collector (OTLP/gRPC, e.g. http://otel-collector:4317); empty: no tracing")
    data_dir: Path = Field(Path("data"), description="where the local stack keeps its data and logs")
    triton_env: Path = Field(Path(".venv-triton"), description="virtual environment of the local Triton's python backend")
    model_template: Path = Field(Path("model_repository"), description="committed Triton configs that an export copies")

    def triton_tls_files(self) -> TlsFiles | None:
        """The TLS files of the Triton client, or None for plaintext."""
        return TlsFiles(self.triton_tls_ca, self.triton_tls_cert, self.triton_tls_key) if self.triton_tls else None

    def milvus_credentials(self) -> str:
        """The Milvus token: ``T2I_MILVUS_TOKEN``, else the file ``T2I_MILVUS_TOKEN_FILE``, else empty (no auth).

        For a loopback URI with neither set, the local stack's generated token (``t2i up`` keeps it
        in ``<data_dir>/stack/milvus/root.token``) is used when it exists; it is never sent elsewhere.
        """
        if self.milvus_token:
            return self.milvus_token
        file = self._milvus_token_path()
        return file.read_text().strip() if file is not None else ""

    def milvus_credentials_source(self) -> str:
        """Where ``milvus_credentials`` reads the token from, for messages; empty when there is none."""
        if self.milvus_token:
            return "T2I_MILVUS_TOKEN"
        if self.milvus_token_file is not None:
            return f"T2I_MILVUS_TOKEN_FILE ({self.milvus_token_file})"
        if (file := self._milvus_token_path()) is not None:
            return f"the local stack's {file} (T2I_MILVUS_TOKEN_FILE is unset)"
        return "the user:password of T2I_MILVUS_URI" if urlsplit(self.milvus_uri).password else ""

    def _milvus_token_path(self) -> Path | None:
        """``T2I_MILVUS_TOKEN_FILE``, else the local stack's token file for a loopback URI when it exists."""
        if self.milvus_token_file is not None:
            return self.milvus_token_file
        local = self.data_dir / "stack" / "milvus" / "root.token"
        return local if urlsplit(self.milvus_uri).hostname in ("127.0.0.1", "localhost", "::1") and local.is_file() else None

    def milvus_tls_args(self) -> dict[str, str]:
        """pymilvus keyword arguments for TLS (an ``https://`` URI turns TLS on; these name the CA and client files)."""
        if self.milvus_tls_cert and self.milvus_tls_key and self.milvus_tls_ca:
            return {"ca_pem_path": str(self.milvus_tls_ca), "client_pem_path": str(self.milvus_tls_cert), "client_key_path": str(self.milvus_tls_key)}
        return {"server_pem_path": str(self.milvus_tls_ca)} if self.milvus_tls_ca else {}


class WebSettings(BaseSettings):
    """The search page (``web``): where it listens, which gateway it asks, which files it may show."""

    model_config = SettingsConfigDict(env_prefix="T2I_WEB_", extra="ignore")

    listen: str = Field("127.0.0.1:8080", description="HTTP listen address host:port")
    gateway: str = Field("127.0.0.1:50051", description="the gRPC gateway the page asks")
    image_roots: str = Field("data", description="folders whose images may be shown as thumbnails, separated by ':'")
    thumb_px: int = Field(256, ge=32, le=1024, description="longest side of a thumbnail")
    thumb_cache: int = Field(512, ge=0, description="thumbnails kept in memory")
    max_upload_mb: int = Field(20, ge=1, description="largest image upload for search by image, in MiB")
    timeout_s: float = Field(20.0, gt=0, description="deadline of one call to the gateway")

    def roots(self) -> list[Path]:
        """The image roots, resolved (symlinks in the roots themselves are followed once, here)."""
        return [Path(part).expanduser().resolve() for part in self.image_roots.split(":") if part]


class GatewaySettings(Settings):
    """``Settings`` plus what only the gRPC gateway uses."""

    listen: str = Field("127.0.0.1:50051", description="gRPC listen address host:port")
    metrics_port: int = Field(9464, description="Prometheus metrics port on the listen host; 0 disables")
    request_timeout_s: float = Field(15.0, gt=0, description="server-side limit when the client sets no deadline")
    max_top_k: int = Field(1000, ge=1, le=16384, description="largest top_k accepted")
    max_page_depth: int = Field(10_000, ge=1, le=16_376, description="deepest hit a walk through pages reaches (offset + top_k of a paged search)")
    alias_refresh_s: float = Field(1.0, ge=0, description="how long searches reuse the alias's collection before asking Milvus again (0: every request)")
    embedding_cache_size: int = Field(10000, ge=0, description="query embeddings kept in the LRU cache (0 disables it)")
    health_interval_s: float = Field(2.0, gt=0, description="how often readiness is re-checked")
    warmup_s: float = Field(
        30.0, ge=0, description="longest the gateway's own first encode and search (gateway/warmup.py) may hold back its first SERVING; 0: none"
    )
    grace_s: float = Field(5.0, ge=0, description="time in-flight RPCs get on shutdown")
    max_text_request_kb: int = Field(
        16,
        ge=1,
        description=(
            "largest SearchText query in KiB; SearchText requests are refused before parsing beyond such a query with a filter at its limits,"
            " EmbedText requests beyond this times T2I_MAX_BATCH"
        ),
    )
    max_connection_age_s: float = Field(
        60.0, ge=0, description="close client connections after this long (0: never), so clients re-resolve DNS and reach new replicas"
    )
    max_in_flight: int = Field(
        16, ge=1, description="requests served at once; more are refused at once with RESOURCE_EXHAUSTED and a retry hint (health is never refused)"
    )
    auth: Literal["tokens", "open"] = Field(
        "tokens", description="'tokens': every call but health and reflection needs a bearer token; 'open': none (only on a loopback listen address)"
    )
    auth_tokens_file: Path | None = Field(None, description="the token file (NAME SCOPES sha256:HASH per line), read again when it changes")
    tls_cert: Path | None = Field(None, description="server certificate chain (PEM); with T2I_TLS_KEY the gateway serves TLS only")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    tls_client_ca: Path | None = Field(None, description="CA bundle for client certificates: set, it turns on mutual TLS")
