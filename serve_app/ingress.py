"""The Ingress deployment: FastAPI routes that authenticate, validate and compose handles.

The ingress holds no model. It reads documents (path, URL or upload), renders
pages with PyMuPDF, sends page images to the model deployments concurrently
and assembles the answer in the contract of serve_app/schemas.py.

No `from __future__ import annotations` here: FastAPI must see real types on the
routes Serve wraps, or UploadFile parameters fail to resolve at request time.
"""

import asyncio
import base64
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from serve_app import __version__, schemas
from serve_app.documents import Document, Page, parse_pages
from serve_app.errors import (
    InvalidInput,
    PayloadTooLarge,
    ServiceError,
    Unavailable,
    error_body,
    unwrap,
)
from serve_app.formats import to_alto, to_hocr, to_page_xml
from serve_app.security import check_api_key, fetch_url, read_upload_file
from serve_app.settings import Settings

logger = logging.getLogger("ray.serve")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"example": error_body(
        code, text, None)}}}
    for status, code, text in [
        (401, "unauthorized", "missing or wrong X-API-Key header"),
        (403, "forbidden", "source.path points outside the upload base"),
        (404, "not_found", "no file 'inbox/x.pdf' under the upload base"),
        (413, "too_large", "3 pages selected; at most 2 per request"),
        (415, "unsupported_media_type", "not a PDF or an image"),
        (422, "invalid_input", "invalid request: body.texts: Field required"),
        (502, "bad_gateway", "source.url answered 500"),
        (503, "unavailable", "the OCR deployment is not part of this application"),
        (504, "upstream_timeout", "source.url did not arrive within 30.0 s"),
    ]
}

app = FastAPI(
    title="ocr-graph",
    version=__version__,
    description="OCR with geometry, kraken baselines, embeddings and rerank for a DMS/archive "
    "backend. Every /v1 route needs the X-API-Key header. Errors share one body: "
    '`{"error": {"code", "message", "detail"}}`.',
    responses=_ERROR_RESPONSES,
)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service key.")
bearer_header = HTTPBearer(auto_error=False, description="The service key, OpenAI style.")


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _error_response(request: Request, status: int, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> JSONResponse:
    body["error"]["request_id"] = _request_id(request)
    return JSONResponse(body, status_code=status, headers=headers)


class RequestGuard:
    """ASGI middleware: the request id, and bodies over OCR_MAX_UPLOAD_BYTES refused.

    Serve's proxy honours a client's X-Request-ID (or makes one), logs it with every
    line of the request and returns it; here it is kept for error bodies. A declared
    Content-Length over the limit is refused before a byte is read; a chunked body is
    counted as it streams in, so no route ever parses more than the limit."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        ingress: Ingress | None = (
            getattr(scope["app"].state, "ingress", None) if scope["type"] == "http" else None)
        if ingress is None:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        limit = ingress.settings.max_upload_bytes + 65536  # room for multipart framing
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            body = error_body("too_large", f"request body is {int(declared)} bytes; at most "
                              f"{limit}", None, request_id)
            return await JSONResponse(body, status_code=413)(scope, receive, send)
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"request body is larger than {limit} bytes")
            return message

        await self.app(scope, counted, send)


app.add_middleware(RequestGuard)


@app.exception_handler(ServiceError)
async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return _error_response(request, exc.status, exc.body(), exc.headers)


@app.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    summary, fields = _field_errors(exc.errors())
    return _error_response(request, 422, error_body("invalid_input", f"invalid request: {summary}",
                                                    fields))


def _field_errors(errors: Any, prefix: str = "") -> tuple[str, list[dict[str, str]]]:
    """Pydantic errors as [{"field", "message"}] and a one-line summary of the first five."""
    fields = [{"field": prefix + ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
              for err in errors]
    return "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5]), fields


@app.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, ServiceError):  # FastAPI wraps errors of body reading in 400
        return await service_error(request, exc.__cause__)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error_response(request, exc.status_code, error_body(code, str(exc.detail)),
                           getattr(exc, "headers", None))


@app.exception_handler(Exception)
async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    cause = unwrap(exc)
    if isinstance(cause, ServiceError):
        return await service_error(request, cause)
    if isinstance(cause, BackPressureError | DeploymentUnavailableError):
        return _error_response(request, 503, error_body(
            "overloaded", "the service is at capacity: retry shortly"), {"Retry-After": "2"})
    logger.exception("unhandled error in request %s", _request_id(request))
    return _error_response(request, 500, error_body(
        "internal_error", "internal error: report the request id to the operator"))


async def require_api_key(request: Request, key: str | None = Depends(api_key_header),
                          bearer: HTTPAuthorizationCredentials | None = Depends(bearer_header)
                          ) -> None:
    """Dependency of every /v1 route: 401 before any body is looked at. The key comes in
    X-API-Key, or as `Authorization: Bearer` so OpenAI clients work unchanged."""
    ingress: Ingress = request.app.state.ingress
    check_api_key(key or (bearer.credentials if bearer else None), ingress.expected_key)


def _json(data: Any) -> Response:
    """orjson with numpy support: embedding vectors go out without a Python-list detour."""
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


def _parse_options(raw: str, model: type[schemas.OcrOptions] | type[schemas.SegmentOptions]
                   ) -> Any:
    try:
        return model.model_validate_json(raw or "{}")
    except ValidationError as exc:
        summary, fields = _field_errors(exc.errors(), prefix="options.")
        raise InvalidInput(f"invalid options: {summary}", fields) from None


async def _read_upload(file: UploadFile, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while chunk := await file.read(1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"upload is larger than {max_bytes} bytes")
        chunks.append(chunk)
    if not size:
        raise InvalidInput("the uploaded file is empty", {"field": "file"})
    return b"".join(chunks)


def _source_name(source: schemas.PathSource | schemas.UrlSource) -> str:
    """The document's file name, as ALTO and PAGE-XML cite it."""
    path = source.path if isinstance(source, schemas.PathSource) else urlsplit(source.url).path
    return PurePosixPath(path).name or "document"


def _ocr_outputs(page_count: int, pages: list[dict[str, Any]], formats: list[str], name: str
                 ) -> dict[str, Any]:
    """The asked formats, all from the same pages."""
    result: dict[str, Any] = {"page_count": page_count}
    engines = [page["engine"] for page in pages]
    if "json" in formats:
        result["pages"] = pages
    if "text" in formats:
        result["text"] = "\n\n".join(page["text"] for page in pages)
    if "alto" in formats:
        result["alto"] = to_alto(pages, engines)
    if "page" in formats:
        result["page_xml"] = [to_page_xml(page, f"{name}#page={page['page']}") for page in pages]
    if "hocr" in formats:
        result["hocr"] = to_hocr(pages, engines)
    return result


V1 = [Depends(require_api_key)]


@serve.deployment(name="Ingress", max_ongoing_requests=256, health_check_period_s=10)
@serve.ingress(app)
class Ingress:
    """Validates, reads documents and fans out to the model deployments."""

    def __init__(self, settings: Settings, models: dict[str, str],
                 handles: dict[str, DeploymentHandle], residency: DeploymentHandle,
                 ocr_engines: list[str]):
        self.settings = settings
        self.ocr_engines = ocr_engines  # the first answers engine=auto
        self.models = models
        self.handles = handles
        self.residency = residency
        self.expected_key = (
            settings.api_key.get_secret_value()
            if settings.auth_mode == "api-key" and settings.api_key else None
        )
        if self.expected_key is None:
            logger.warning("OCR_SIDECAR_AUTH_MODE=network-isolation: /v1 routes need NO API "
                           "key; only a network boundary protects this service")
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=settings.url_timeout_s)
        app.state.ingress = self

    async def __del__(self) -> None:
        await self.http.aclose()

    def _handle(self, name: str) -> DeploymentHandle:
        handle = self.handles.get(name)
        if handle is None:
            raise Unavailable(f"the {name} deployment is not part of this application")
        return handle

    # ---- health -----------------------------------------------------------------------

    @app.get("/healthz", response_model=schemas.Health, tags=["health"])
    async def healthz(self) -> dict[str, Any]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.Health, tags=["health"],
             responses={503: {"model": schemas.Health}})
    async def readyz(self) -> Response:
        """Readiness: every deployment answers and has its model loaded."""
        states: dict[str, str] = {}
        for name, handle in {**self.handles, "ResidencyController": self.residency}.items():
            method = handle.capacity if name == "ResidencyController" else handle.describe
            try:
                await asyncio.wait_for(method.remote(), timeout=5)
                states[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which
                states[name] = f"unavailable: {type(unwrap(exc)).__name__}"
        ready = all(state == "ok" for state in states.values())
        return JSONResponse({"status": "ok" if ready else "unavailable", "deployments": states},
                            status_code=200 if ready else 503)

    # ---- documents --------------------------------------------------------------------

    async def _source_bytes(self, source: schemas.PathSource | schemas.UrlSource) -> bytes:
        s = self.settings
        if isinstance(source, schemas.PathSource):
            assert s.upload_base is not None
            return await run_in_threadpool(read_upload_file, s.upload_base, source.path,
                                           s.max_upload_bytes)
        return await fetch_url(self.http, source.url, s.allowed_pdf_hosts, s.max_upload_bytes,
                               s.url_timeout_s)

    async def _pages(self, data: bytes, options: schemas.PageOptions, force_ocr: bool,
                     work: Callable[[Page], Awaitable[dict[str, Any]]]) -> tuple[int, list[Any]]:
        """Render selected pages one at a time (PyMuPDF is single-threaded per document),
        keep at most OCR_PAGES_IN_FLIGHT of them in flight (bounding memory and the load on
        the LLM), run `work` on each concurrently."""
        doc = await run_in_threadpool(Document, data, self.settings.max_page_pixels)
        with doc:
            page_count = doc.page_count
            numbers = parse_pages(options.pages, page_count, self.settings.max_pages)
            slots = asyncio.Semaphore(self.settings.pages_in_flight)

            async def one(number: int) -> dict[str, Any]:
                started = time.perf_counter()
                try:
                    page = await run_in_threadpool(doc.page, number, options.dpi, force_ocr)
                    result = await work(page)
                finally:
                    slots.release()
                result["timing_ms"] = round((time.perf_counter() - started) * 1000, 1)
                return result

            tasks = []
            for number in numbers:
                await slots.acquire()
                tasks.append(asyncio.create_task(one(number)))
            # Let every page finish before the document closes: a render thread must never
            # outlive it. Then report the first failure, if any.
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return page_count, list(results)

    def _check_engine(self, engine: str) -> str:
        """422 naming the configured engines when the asked one is not among them; the OCR
        replica resolves auto and reports an engine its node lacks."""
        if engine != "auto" and engine not in self.ocr_engines:
            available = ["auto", *self.ocr_engines]
            raise InvalidInput(
                f"OCR engine {engine!r} is not deployed here; available: {', '.join(available)}",
                {"field": "engine", "available": available},
            )
        return engine

    async def _ocr(self, load: Callable[[], Awaitable[bytes]], options: schemas.OcrOptions,
                   name: str) -> dict[str, Any]:
        """Check what can be checked, then read the document: a request that cannot succeed
        never downloads or reads anything. kraken recognises the lines that the
        Segmentation deployment finds, so its pages go through both."""
        ocr = self._handle("OCR")
        engine = self._check_engine(options.engine)
        baselines = engine == "kraken" or (engine == "auto" and self.ocr_engines[:1] == [
            "kraken"])
        segmentation = self._handle("Segmentation") if baselines else None
        engine_options = {"languages": options.languages,
                          "llm": options.llm.model_dump() if options.llm else None}
        data = await load()

        async def work(page: Page) -> dict[str, Any]:
            base = {"page": page.number, "width": page.width, "height": page.height,
                    "dpi": page.dpi}
            if page.text_lines is not None:
                lines = [{"text": ln.text, "bbox": ln.bbox, "polygon": ln.polygon,
                          "confidence": ln.confidence} for ln in page.text_lines]
                return {**base, "source": "text-layer", "engine": "text-layer", "lines": lines,
                        "text": "\n".join(ln["text"] for ln in lines)}
            page_options = engine_options
            if segmentation is not None:
                found = await segmentation.segment.remote(page.image)
                page_options = {**engine_options, "segmentation": found["lines"]}
            used, lines = await ocr.recognize.remote(page.image, engine, page_options)
            return {**base, "source": "ocr", "engine": used, "lines": lines,
                    "text": "\n".join(ln["text"] for ln in lines)}

        page_count, pages = await self._pages(data, options, options.force_ocr, work)
        return await run_in_threadpool(_ocr_outputs, page_count, pages, options.formats, name)

    @app.post("/v1/ocr", response_model=schemas.OcrResponse, tags=["ocr"], dependencies=V1,
              response_model_exclude_none=True)
    async def ocr(self, body: schemas.OcrRequest) -> dict[str, Any]:
        """OCR a PDF or image from the upload base or an allowlisted URL.

        Born-digital PDF pages come from their text layer (source "text-layer") unless
        force_ocr is set; scanned pages are rendered at `dpi` and recognised."""
        return await self._ocr(lambda: self._source_bytes(body.source), body,
                               _source_name(body.source))

    @app.post("/v1/ocr/upload", response_model=schemas.OcrResponse, tags=["ocr"],
              dependencies=V1, response_model_exclude_none=True)
    async def ocr_upload(
        self,
        file: UploadFile = File(..., description="The PDF or image."),
        options: str = Form("{}", description="OcrOptions as JSON, e.g. "
                            '{"pages": "1-2", "formats": ["text"]}'),
    ) -> dict[str, Any]:
        """OCR an uploaded PDF or image (multipart/form-data)."""
        parsed = _parse_options(options, schemas.OcrOptions)
        return await self._ocr(lambda: _read_upload(file, self.settings.max_upload_bytes), parsed,
                               PurePosixPath(file.filename or "upload").name)

    async def _segment(self, load: Callable[[], Awaitable[bytes]],
                       options: schemas.SegmentOptions) -> dict[str, Any]:
        segmentation = self._handle("Segmentation")
        data = await load()

        async def work(page: Page) -> dict[str, Any]:
            found = await segmentation.segment.remote(page.image)
            return {"page": page.number, "width": page.width, "height": page.height, **found}

        page_count, pages = await self._pages(data, options, True, work)
        return {"model": self.models["Segmentation"], "page_count": page_count, "pages": pages}

    @app.post("/v1/segment", response_model=schemas.SegmentResponse, tags=["segmentation"],
              dependencies=V1)
    async def segment(self, body: schemas.SegmentRequest) -> dict[str, Any]:
        """kraken baselines, line boundary polygons and regions for every selected page."""
        return await self._segment(lambda: self._source_bytes(body.source), body)

    @app.post("/v1/segment/upload", response_model=schemas.SegmentResponse,
              tags=["segmentation"], dependencies=V1)
    async def segment_upload(
        self,
        file: UploadFile = File(..., description="The PDF or image."),
        options: str = Form("{}", description='SegmentOptions as JSON, e.g. {"dpi": 300}'),
    ) -> dict[str, Any]:
        """Segment an uploaded PDF or image (multipart/form-data)."""
        parsed = _parse_options(options, schemas.SegmentOptions)
        return await self._segment(lambda: _read_upload(file, self.settings.max_upload_bytes),
                                   parsed)

    # ---- text -------------------------------------------------------------------------

    def _check_texts(self, texts: list[str], field: str) -> None:
        s = self.settings
        if len(texts) > s.max_texts:
            raise PayloadTooLarge(f"{len(texts)} {field}; at most {s.max_texts} per request",
                                  {"field": field, "max": s.max_texts})
        for index, text in enumerate(texts):
            if len(text) > s.max_text_chars:
                raise PayloadTooLarge(
                    f"{field}[{index}] has {len(text)} characters; at most {s.max_text_chars}",
                    {"field": f"{field}.{index}", "max": s.max_text_chars})

    @app.post("/v1/embed", response_model=schemas.EmbedResponse, tags=["embeddings"],
              dependencies=V1)
    async def embed(self, body: schemas.EmbedRequest) -> Response:
        """Dense, sparse (token -> weight) and colbert vectors, as asked, in one call."""
        self._check_texts(body.texts, "texts")
        want = [name for name, asked in (("dense", body.return_dense),
                ("sparse", body.return_sparse), ("colbert", body.return_colbert)) if asked]
        items = await self._handle("Embedding").embed.remote(body.texts, want, body.max_length)
        for index, item in enumerate(items):
            item["index"] = index
        tokens = sum(item["tokens"] for item in items)
        return _json({"model": self.models["Embedding"], "data": items,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/v1/embeddings", response_model=schemas.OpenAIEmbeddingResponse,
              tags=["embeddings"], dependencies=V1)
    async def openai_embeddings(self, body: schemas.OpenAIEmbeddingRequest) -> Response:
        """OpenAI-compatible embeddings: the `openai` client works against this service
        unchanged (`base_url=".../v1"`, the service key as `api_key`)."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise InvalidInput("input is empty", {"field": "input"})
        self._check_texts(texts, "input")
        items = await self._handle("Embedding").embed.remote(texts, ["dense"], None)
        size = len(items[0]["dense"])
        if body.dimensions not in (None, size):
            raise InvalidInput(f"model {self.models['Embedding']!r} has {size} dimensions; "
                               f"dimensions={body.dimensions} is not available",
                               {"field": "dimensions"})
        data = [{"object": "embedding", "index": i,
                 "embedding": (base64.b64encode(item["dense"].astype("<f4").tobytes()).decode()
                               if body.encoding_format == "base64" else item["dense"])}
                for i, item in enumerate(items)]
        tokens = sum(item["tokens"] for item in items)
        return _json({"object": "list", "data": data, "model": self.models["Embedding"],
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @app.post("/v1/rerank", response_model=schemas.RerankResponse, tags=["rerank"],
              dependencies=V1)
    async def rerank(self, body: schemas.RerankRequest) -> dict[str, Any]:
        """Documents ordered by relevance to the query (Cohere/TEI response shape)."""
        self._check_texts([body.query, *body.documents], "documents")
        answer = await self._handle("Rerank").rerank.remote(body.query, body.documents)
        order = sorted(range(len(body.documents)), key=lambda i: -answer["scores"][i])
        results = [
            {"index": i, "relevance_score": answer["scores"][i],
             "document": body.documents[i] if body.return_documents else None}
            for i in order[: body.top_n]
        ]
        return {"model": answer["model"], "method": answer["method"], "results": results}

    # ---- operations -------------------------------------------------------------------

    async def _describe_models(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(h.describe.remote() for h in self.handles.values())))

    @app.get("/v1/models", response_model=list[schemas.ModelInfo], tags=["operations"],
             dependencies=V1)
    async def list_models(self) -> list[dict[str, Any]]:
        """Which model each deployment serves, on which device, with what GPU share."""
        return await self._describe_models()

    @app.get("/v1/capacity", response_model=schemas.CapacityResponse, tags=["operations"],
             dependencies=V1)
    async def capacity(self) -> dict[str, Any]:
        """VRAM per GPU, the LLM's share, each model's device and footprint, the profile."""
        capacity, models = await asyncio.gather(self.residency.capacity.remote(),
                                                self._describe_models())
        return {**capacity, "models": models}
