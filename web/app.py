"""The search page: a static page and a thin JSON API that calls the gateway over gRPC like any client.

It is a client of the gateway like any other: its calls go through ``text2image_client.AsyncClient``.

It never touches Triton or Milvus. Thumbnails are served by indexed id only: the id is looked up
through the gateway (``GetImages``), and the stored uri is shown only when it resolves (symlinks
followed) to a file under one of the configured image roots, or redirected to when it is an
http(s) URL. Every response carries a Content Security Policy without inline script, nosniff and
a frame ban; the page builds its DOM with ``textContent`` only, so user text is never markup.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.auth import client_token
from core.settings import Settings, WebSettings
from text2image_client import AsyncClient, Cutoff, Filter, SearchResult
from web.thumbnails import ThumbnailCache, make_thumbnail

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_TOP_K = 100
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
# gRPC status of a gateway answer -> HTTP status the page gets.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class BadRequest(Exception):
    """A parameter of the page's request is wrong; the message says which and why."""


class SecurityHeaders:
    """ASGI middleware that adds ``SECURITY_HEADERS`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in SECURITY_HEADERS]
                message["headers"] = headers + [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name, "")
    try:
        value = int(raw) if raw else default
    except ValueError as exc:
        raise BadRequest(f"{name} must be a whole number; got {raw[:40]!r}") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}; got {value}")
    return value


CUTOFFS: dict[str, Cutoff | None] = {"": None, "none": "none", "autocut": "autocut", "calibrated": "calibrated"}


def _cutoff(request: Request) -> Cutoff | None:
    raw = request.query_params.get("cutoff", "")
    if raw not in CUTOFFS:
        raise BadRequest(f"cutoff must be none, autocut or calibrated; got {raw[:40]!r}")
    return CUTOFFS[raw]


def _filter(request: Request) -> tuple[Filter, float | None]:
    labels = [label for label in request.query_params.getlist("label") if label]
    raw = request.query_params.get("min_score", "")
    try:
        min_score = float(raw) if raw else None
    except ValueError as exc:
        raise BadRequest(f"min_score must be a number between -1 and 1; got {raw[:40]!r}") from exc
    return Filter(all_of=labels), min_score


def _hits(result: SearchResult) -> dict[str, Any]:
    return {
        "hits": [{"id": h.id, "uri": h.uri, "score": h.score, "labels": list(h.labels), "thumb": "/thumb/" + quote(h.id, safe="")} for h in result.hits],
        "model_id": result.model_id,
        "took_ms": result.took_ms,
        "query_truncated": result.query_truncated,
        "collection": result.collection,
        "cutoff": result.cutoff,
        "cutoff_score": result.cutoff_score,
        "cutoff_dropped": result.cutoff_dropped,
    }


class SearchPage:
    """The page's API over one gateway client (its deadline is ``settings.timeout_s``); ``routes`` wires it into Starlette."""

    def __init__(self, settings: WebSettings, client: AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.roots = settings.roots()
        self.cache = ThumbnailCache(settings.thumb_cache)

    def routes(self) -> list[Route | Mount]:
        """Every route of the page."""
        return [
            Route("/", self.page),
            Route("/healthz", self.healthz),
            Route("/api/info", self.api(self.info)),
            Route("/api/search", self.api(self.search_text)),
            Route("/api/similar", self.api(self.similar)),
            Route("/api/search-image", self.api(self.search_image), methods=["POST"]),
            Route("/thumb/{id:path}", self.thumbnail),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]

    def api(self, handler: Callable[[Request], Awaitable[dict[str, Any]]]) -> Callable[[Request], Awaitable[Response]]:
        """A JSON endpoint: the handler's dict, or ``{"error": ...}`` with the HTTP status of the failure."""

        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await handler(request))
            except BadRequest as exc:
                return JSONResponse({"error": str(exc), "code": "INVALID_ARGUMENT"}, status_code=400)
            except grpc.aio.AioRpcError as exc:
                return _gateway_error(exc, self.settings.gateway)

        return endpoint

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def healthz(self, request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    async def info(self, request: Request) -> dict[str, Any]:
        """The model, the count and the labels in use."""
        answer = await self.client.info()
        labels = await self.client.labels()
        return {
            "model_id": answer.model_id, "random_weights": answer.random_weights, "count": answer.count, "collection": answer.collection,
            "labels": list(labels.labels), "labels_complete": labels.complete,
        }  # fmt: skip

    async def search_text(self, request: Request) -> dict[str, Any]:
        """``SearchText`` with ``q``, ``k``, ``label`` (repeated), ``min_score`` and ``cutoff`` (none, autocut, calibrated)."""
        search_filter, min_score = _filter(request)
        query, top_k = request.query_params.get("q", ""), _int(request, "k", 12, 1, MAX_TOP_K)
        return _hits(await self.client.search_text(query, top_k, filter=search_filter, min_score=min_score, cutoff=_cutoff(request)))

    async def similar(self, request: Request) -> dict[str, Any]:
        """``SearchImage`` by an indexed ``id``, without the image itself."""
        search_filter, min_score = _filter(request)
        image_id, top_k = request.query_params.get("id", ""), _int(request, "k", 12, 1, MAX_TOP_K)
        return _hits(
            await self.client.search_image(id=image_id, top_k=top_k, filter=search_filter, min_score=min_score, exclude_self=True, cutoff=_cutoff(request))
        )

    async def search_image(self, request: Request) -> dict[str, Any]:
        """``SearchImage`` with the request body as the image (at most ``max_upload_mb``)."""
        limit = self.settings.max_upload_mb * 2**20
        if int(request.headers.get("content-length") or 0) > limit:
            raise BadRequest(f"the image is over the {self.settings.max_upload_mb} MiB limit")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise BadRequest(f"the image is over the {self.settings.max_upload_mb} MiB limit")
        search_filter, min_score = _filter(request)
        top_k = _int(request, "k", 12, 1, MAX_TOP_K)
        return _hits(await self.client.search_image(bytes(body), top_k, filter=search_filter, min_score=min_score, cutoff=_cutoff(request)))

    async def thumbnail(self, request: Request) -> Response:
        """The thumbnail of an indexed image, by id: a file under an image root, or a redirect to its http(s) URL."""
        try:
            found = await self.client.get_images([request.path_params["id"]])
            if not found:
                raise FileNotFoundError("no indexed image has this id")
            uri = found[0].uri
            if urlsplit(uri).scheme in ("http", "https"):
                return RedirectResponse(uri, status_code=302)
            return Response(await self.thumbnail_of(self.shown_file(uri)), media_type="image/jpeg", headers={"cache-control": "private, max-age=300"})
        except grpc.aio.AioRpcError as exc:
            return _gateway_error(exc, self.settings.gateway)
        except FileNotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except PermissionError as exc:
            logger.warning("refused a thumbnail: %s", exc)
            return JSONResponse({"error": "this image lies outside the folders the page may show (T2I_WEB_IMAGE_ROOTS)"}, status_code=403)
        except ValueError as exc:
            return JSONResponse({"error": f"the image cannot be shown: {exc}"}, status_code=422)

    async def thumbnail_of(self, path: Path) -> bytes:
        """The cached thumbnail of ``path``, made (off the event loop) when missing or stale."""
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size, self.settings.thumb_px)
        data = self.cache.get(key)
        if data is None:
            data = await run_in_threadpool(make_thumbnail, path, self.settings.thumb_px)
            self.cache.put(key, data)
        return data

    def shown_file(self, uri: str) -> Path:
        """The real file behind a stored ``uri``, if the page may show it.

        Raises:
            FileNotFoundError: the uri is not an absolute file path, or the file is gone.
            PermissionError: the file (symlinks followed) lies outside every image root.
        """
        parts = urlsplit(uri)
        path = Path(parts.path if parts.scheme == "file" else uri)
        if parts.scheme not in ("", "file") or not path.is_absolute():
            raise FileNotFoundError("this image's uri is not an absolute file path or an http(s) URL")
        try:
            real = path.resolve(strict=True)
        except OSError as exc:
            raise FileNotFoundError("the image file is gone") from exc
        if not any(real.is_relative_to(root) for root in self.roots):
            raise PermissionError(f"{uri} resolves to {real}, outside {[str(r) for r in self.roots]}")
        return real


def create_app(settings: WebSettings, client: AsyncClient | None = None, token: str | None = None) -> Starlette:
    """The page and its API for ``settings``; the client of the gateway is opened (and closed) here unless given.

    ``token`` is the gateway read token presented on every call (default: ``core.auth.client_token``:
    ``T2I_TOKEN``, ``T2I_TOKEN_FILE``, or the local stack's); it is not used with a given ``client``.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if client is None:
            read_token = token if token is not None else client_token("read", Settings().data_dir)
            link = AsyncClient(settings.gateway, token=read_token or None, timeout=settings.timeout_s)
        else:
            link = client
        app.router.routes.extend(SearchPage(settings, link).routes())
        try:
            yield
        finally:
            if client is None:
                await link.close()

    app = Starlette(lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    return app


def _gateway_error(exc: grpc.aio.AioRpcError, address: str) -> JSONResponse:
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and "Triton" not in details and "Milvus" not in details:
        details = f"the search gateway at {address} cannot be reached; is the stack running ('make up')?"
    return JSONResponse({"error": details, "code": code.name}, status_code=HTTP_STATUS.get(code, 502))
