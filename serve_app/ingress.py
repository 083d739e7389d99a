"""The Ingress deployment: each route parses its request, calls the pipeline or a
deployment, and returns the shaped response.

The ingress holds no model. The FastAPI app around these routes (OpenAPI, the request
guard, the API key, error handlers) is built per replica in serve_app/asgi.py; documents
go through serve_app/pipeline.py; responses are shaped by serve_app/schemas.py.

No `from __future__ import annotations` here: FastAPI must see real types on the
routes, or UploadFile parameters fail to resolve at request time.
"""

import asyncio
import logging
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from fastapi import FastAPI, File, Form, UploadFile
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from serve_app import schemas
from serve_app.asgi import build_http_app, expected_api_key, route
from serve_app.error_handlers import field_errors
from serve_app.kernel.engines import OcrEngines
from serve_app.kernel.errors import InvalidInput, PayloadTooLarge, unwrap
from serve_app.kernel.settings import Settings
from serve_app.pipeline import Handles, Pipeline
from serve_app.security import fetch_url, read_upload_file

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Ingress", max_ongoing_requests=256, health_check_period_s=10)
@serve.ingress()
class Ingress:
    """Validates, reads documents and fans out to the model deployments."""

    def __init__(self, settings: Settings, models: dict[str, str], handles: Handles,
                 residency: DeploymentHandle, ocr_engines: OcrEngines | None):
        self.settings = settings
        self.models = models
        self.handles = handles
        self.residency = residency
        self.pipeline = Pipeline(settings, handles, ocr_engines)
        if expected_api_key(settings) is None:
            logger.warning("OCR_SIDECAR_AUTH_MODE=network-isolation: /v1 routes need NO API "
                           "key; only a network boundary protects this service")
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=settings.url_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self, self.settings)

    async def __del__(self) -> None:
        await self.http.aclose()

    # ---- health -----------------------------------------------------------------------

    @route("GET", "/healthz", response_model=schemas.Health, tags=["health"])
    async def healthz(self) -> dict[str, Any]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @route("GET", "/readyz", response_model=schemas.Health, tags=["health"],
           responses={503: {"model": schemas.Health}})
    async def readyz(self) -> Response:
        """Readiness: every deployment answers and has its model loaded."""
        states: dict[str, str] = {}
        for name, handle in {**self.handles.deployed(),
                             "ResidencyController": self.residency}.items():
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

    async def _ocr_response(self, page_count: int, pages: list[Any],
                            options: schemas.OcrOptions, name: str) -> dict[str, Any]:
        return await run_in_threadpool(schemas.OcrResponse.from_pages, page_count, pages,
                                       options.formats, name)

    @route("POST", "/v1/ocr", response_model=schemas.OcrResponse, tags=["ocr"],
           response_model_exclude_none=True)
    async def ocr(self, body: schemas.OcrRequest) -> dict[str, Any]:
        """OCR a PDF or image from the upload base or an allowlisted URL.

        Born-digital PDF pages come from their text layer (source "text-layer") unless
        force_ocr is set; scanned pages are rendered at `dpi` and recognised."""
        page_count, pages = await self.pipeline.ocr(lambda: self._source_bytes(body.source),
                                                    body)
        return await self._ocr_response(page_count, pages, body, _source_name(body.source))

    @route("POST", "/v1/ocr/upload", response_model=schemas.OcrResponse, tags=["ocr"],
           response_model_exclude_none=True)
    async def ocr_upload(
        self,
        file: UploadFile = File(..., description="The PDF or image."),
        options: str = Form("{}", description="OcrOptions as JSON, e.g. "
                            '{"pages": "1-2", "formats": ["text"]}'),
    ) -> dict[str, Any]:
        """OCR an uploaded PDF or image (multipart/form-data)."""
        parsed = _parse_options(options, schemas.OcrOptions)
        page_count, pages = await self.pipeline.ocr(
            lambda: _read_upload(file, self.settings.max_upload_bytes), parsed)
        return await self._ocr_response(page_count, pages, parsed,
                                        PurePosixPath(file.filename or "upload").name)

    @route("POST", "/v1/segment", response_model=schemas.SegmentResponse,
           tags=["segmentation"])
    async def segment(self, body: schemas.SegmentRequest) -> dict[str, Any]:
        """kraken baselines, line boundary polygons and regions for every selected page."""
        page_count, pages = await self.pipeline.segment(
            lambda: self._source_bytes(body.source), body)
        return {"model": self.models["Segmentation"], "page_count": page_count, "pages": pages}

    @route("POST", "/v1/segment/upload", response_model=schemas.SegmentResponse,
           tags=["segmentation"])
    async def segment_upload(
        self,
        file: UploadFile = File(..., description="The PDF or image."),
        options: str = Form("{}", description='SegmentOptions as JSON, e.g. {"dpi": 300}'),
    ) -> dict[str, Any]:
        """Segment an uploaded PDF or image (multipart/form-data)."""
        parsed = _parse_options(options, schemas.SegmentOptions)
        page_count, pages = await self.pipeline.segment(
            lambda: _read_upload(file, self.settings.max_upload_bytes), parsed)
        return {"model": self.models["Segmentation"], "page_count": page_count, "pages": pages}

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

    @route("POST", "/v1/embed", response_model=schemas.EmbedResponse, tags=["embeddings"])
    async def embed(self, body: schemas.EmbedRequest) -> Response:
        """Dense, sparse (token -> weight) and colbert vectors, as asked, in one call."""
        self._check_texts(body.texts, "texts")
        want = [name for name, asked in (("dense", body.return_dense),
                ("sparse", body.return_sparse), ("colbert", body.return_colbert)) if asked]
        items = await self.handles.require("Embedding").embed.remote(body.texts, want,
                                                                      body.max_length)
        return _json(schemas.EmbedResponse.from_items(self.models["Embedding"], items))

    @route("POST", "/v1/embeddings", response_model=schemas.OpenAIEmbeddingResponse,
           tags=["embeddings"])
    async def openai_embeddings(self, body: schemas.OpenAIEmbeddingRequest) -> Response:
        """OpenAI-compatible embeddings: the `openai` client works against this service
        unchanged (`base_url=".../v1"`, the service key as `api_key`)."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise InvalidInput("input is empty", {"field": "input"})
        self._check_texts(texts, "input")
        items = await self.handles.require("Embedding").embed.remote(texts, ["dense"], None)
        size = len(items[0]["dense"])
        if body.dimensions not in (None, size):
            raise InvalidInput(f"model {self.models['Embedding']!r} has {size} dimensions; "
                               f"dimensions={body.dimensions} is not available",
                               {"field": "dimensions"})
        return _json(schemas.OpenAIEmbeddingResponse.from_items(
            self.models["Embedding"], items, body.encoding_format))

    @route("POST", "/v1/rerank", response_model=schemas.RerankResponse, tags=["rerank"])
    async def rerank(self, body: schemas.RerankRequest) -> dict[str, Any]:
        """Documents ordered by relevance to the query (Cohere/TEI response shape)."""
        self._check_texts([body.query, *body.documents], "documents")
        answer = await self.handles.require("Rerank").rerank.remote(body.query, body.documents)
        return schemas.RerankResponse.from_scores(body, answer)

    # ---- operations -------------------------------------------------------------------

    async def _describe_models(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(
            *(h.describe.remote() for h in self.handles.deployed().values())))

    @route("GET", "/v1/models", response_model=list[schemas.ModelInfo], tags=["operations"])
    async def list_models(self) -> list[dict[str, Any]]:
        """Which model each deployment serves, on which device, with what GPU share."""
        return await self._describe_models()

    @route("GET", "/v1/capacity", response_model=schemas.CapacityResponse,
           tags=["operations"])
    async def capacity(self) -> dict[str, Any]:
        """VRAM per GPU, the LLM's share, each model's device and footprint, the profile."""
        capacity, models = await asyncio.gather(self.residency.capacity.remote(),
                                                self._describe_models())
        return {**capacity, "models": models}


def _json(data: Any) -> Response:
    """orjson with numpy support: embedding vectors go out without a Python-list detour."""
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


def _parse_options(raw: str, model: type[schemas.OcrOptions] | type[schemas.SegmentOptions]
                   ) -> Any:
    try:
        return model.model_validate_json(raw or "{}")
    except ValidationError as exc:
        summary, fields = field_errors(exc.errors(), prefix="options.")
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
