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
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import ray
from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from serve_app import schemas
from serve_app.asgi import build_http_app, expected_api_key, route
from serve_app.budget import Charge, texts_to_embed
from serve_app.calls import answer
from serve_app.error_handlers import field_errors
from serve_app.front_door import INGRESS_MAX_ONGOING, Gate, register_gates
from serve_app.kernel.datasets import Kind, scan_dataset, too_few
from serve_app.kernel.engines import OcrEngines
from serve_app.kernel.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from serve_app.kernel.settings import Settings
from serve_app.pipeline import Handles, PagesRead, Pipeline
from serve_app.security import (
    ArchiveLimits,
    check_token,
    extract_zip,
    fetch_url,
    read_upload_file,
)
from serve_app.serve_state import application_state
from serve_app.similarity import SIMILARITY_ENGINE, similarity_scores

logger = logging.getLogger("ray.serve")


# Every request HAProxy hands over reaches the front door in the app, which refuses beyond
# OCR_FRONT_MAX_REQUESTS (serve_app/front_door.py); no request waits unseen in Serve's queue.
@serve.deployment(name="Ingress", max_ongoing_requests=INGRESS_MAX_ONGOING,
                  health_check_period_s=10)
@serve.ingress()
class Ingress:
    """Validates, reads documents and fans out to the model deployments."""

    def __init__(self, settings: Settings, models: dict[str, str], handles: Handles,
                 residency: DeploymentHandle, ocr_engines: OcrEngines | None,
                 similarity_rerank: str | None = None):
        """`similarity_rerank`: the catalog name of the embedding-similarity rerank when
        this Ingress ranks by it itself (ADR 015), else None: a Rerank deployment, if
        any, ranks."""
        self.settings = settings
        self.models = models
        self.handles = handles
        self.similarity_rerank = similarity_rerank
        self.residency = residency
        self.pipeline = Pipeline(settings, handles, ocr_engines)
        self.pipeline.text_layers.start()
        self.texts_in_flight = texts_to_embed(settings.max_texts_in_flight)
        register_gates(self.door_gates())  # the door Serve puts before this replica's server
        if expected_api_key(settings) is None:
            logger.warning("OCR_SIDECAR_AUTH_MODE=network-isolation: /v1 routes need NO API "
                           "key; only a network boundary protects this service")
        self.http = httpx.AsyncClient(follow_redirects=False, timeout=settings.url_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_http_app(self, self.settings)

    def door_gates(self) -> dict[str, Gate]:
        """The routes the front door refuses before reading them while their budget is
        full: those that send texts to the Embedding, by the texts in flight."""
        routes = ["/v1/embed", "/v1/embeddings"]
        if self.similarity_rerank is not None:
            routes += ["/v1/rerank", "/v2/rerank"]
        return dict.fromkeys(routes, self.texts_in_flight.refusal)

    async def __del__(self) -> None:
        self.pipeline.text_layers.close()
        await self.http.aclose()

    async def _call(self, response: DeploymentResponse, what: str) -> Any:
        return await answer(response, self.settings.call_timeout_s, what)

    # ---- health -----------------------------------------------------------------------

    @route("GET", "/healthz", response_model=schemas.Health, tags=["health"])
    async def healthz(self) -> dict[str, Any]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    @route("GET", "/readyz", response_model=schemas.Readiness, tags=["health"],
           responses={503: {"model": schemas.Readiness}})
    async def readyz(self) -> Response:
        """Readiness from what Serve's controller knows of every replica (started, model
        loaded, passing its health checks): it never queues behind requests, so it holds
        under overload. Ready when every deployment has a running replica."""
        app_name = serve.get_replica_context().app_name
        try:
            application = await run_in_threadpool(application_state, app_name)
        except Exception as exc:  # the controller is away: nothing can be said to be ready
            return JSONResponse({"status": "unavailable", "deployments": {},
                                 "message": f"Serve's controller did not answer: {exc}"},
                                status_code=503)
        if application is None:  # being deleted, or replaced under another name
            return JSONResponse({"status": "unavailable", "deployments": {},
                                 "message": f"Serve has no application {app_name!r}"},
                                status_code=503)
        deployments = {
            name: {"status": state.status, "running": state.replicas.get("RUNNING", 0),
                   "replicas": state.replicas, "message": state.message or None}
            for name, state in application.deployments.items()
            if name != "Ingress"}  # it is answering this
        ready = all(state["running"] > 0 for state in deployments.values())
        return JSONResponse({"status": "ok" if ready else "unavailable",
                             "deployments": deployments},
                            status_code=200 if ready else 503)

    # ---- documents --------------------------------------------------------------------

    async def _source_bytes(self, source: schemas.PathSource | schemas.UrlSource,
                            charge: Charge) -> bytes:
        s = self.settings
        if isinstance(source, schemas.PathSource):
            assert s.upload_base is not None
            return await run_in_threadpool(read_upload_file, s.upload_base, source.path,
                                           s.max_upload_bytes, charge)
        return await fetch_url(self.http, source.url, s.allowed_pdf_hosts, s.max_upload_bytes,
                               s.url_timeout_s, charge)

    async def _ocr_response(self, read: PagesRead[Any], options: schemas.OcrOptions,
                            name: str) -> Response:
        return await run_in_threadpool(lambda: _checked_json(
            schemas.OcrResponse, schemas.OcrResponse.from_pages(read, options.formats, name),
            exclude_none=True))

    async def _segment_response(self, read: PagesRead[Any]) -> Response:
        return await run_in_threadpool(lambda: _checked_json(
            schemas.SegmentResponse,
            schemas.SegmentResponse.from_pages(self.models["Segmentation"], read)))

    @route("POST", "/v1/ocr", response_model=schemas.OcrResponse, tags=["ocr"],
           response_model_exclude_none=True)
    async def ocr(self, body: schemas.OcrRequest) -> Response:
        """OCR a PDF or image from the upload base or an allowlisted URL.

        Born-digital PDF pages come from their text layer (source "text-layer") unless
        force_ocr is set; scanned pages are rendered at `dpi` and recognised."""
        read = await self.pipeline.ocr(lambda charge: self._source_bytes(body.source, charge),
                                       body)
        return await self._ocr_response(read, body, _source_name(body.source))

    @route("POST", "/v1/ocr/upload", response_model=schemas.OcrResponse, tags=["ocr"],
           response_model_exclude_none=True)
    async def ocr_upload(
        self,
        file: UploadFile = File(..., description="The PDF or image."),
        options: str = Form("{}", description="OcrOptions as JSON, e.g. "
                            '{"pages": "1-2", "formats": ["text"]}'),
    ) -> Response:
        """OCR an uploaded PDF or image (multipart/form-data)."""
        parsed = _parse_options(options, schemas.OcrOptions)
        read = await self.pipeline.ocr(
            lambda charge: _read_upload(file, self.settings.max_upload_bytes, charge), parsed)
        return await self._ocr_response(read, parsed,
                                        PurePosixPath(file.filename or "upload").name)

    @route("POST", "/v1/segment", response_model=schemas.SegmentResponse,
           tags=["segmentation"])
    async def segment(self, body: schemas.SegmentRequest) -> Response:
        """kraken baselines, line boundary polygons and regions for every selected page."""
        read = await self.pipeline.segment(
            lambda charge: self._source_bytes(body.source, charge), body)
        return await self._segment_response(read)

    @route("POST", "/v1/segment/upload", response_model=schemas.SegmentResponse,
           tags=["segmentation"])
    async def segment_upload(
        self,
        file: UploadFile = File(..., description="The PDF or image."),
        options: str = Form("{}", description='SegmentOptions as JSON, e.g. {"dpi": 300}'),
    ) -> Response:
        """Segment an uploaded PDF or image (multipart/form-data)."""
        parsed = _parse_options(options, schemas.SegmentOptions)
        read = await self.pipeline.segment(
            lambda charge: _read_upload(file, self.settings.max_upload_bytes, charge), parsed)
        return await self._segment_response(read)

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

    async def _embed(self, texts: list[str], want: list[str], max_length: int | None
                     ) -> list[dict[str, Any]]:
        """The Embedding's items for `texts`, charged to EMBED_MAX_TEXTS_IN_FLIGHT while
        they are in flight: the queue in front of the Embedding is bounded by its work."""
        embedding = self.handles.require("Embedding")
        if travels_by_value(texts, want):
            embedding = embedding.options(_by_reference=False)
        with self.texts_in_flight.hold() as charge:
            charge(len(texts))
            items: list[dict[str, Any]] = await self._call(
                embedding.embed.remote(texts, want, max_length), "the Embedding deployment")
            return items

    @route("POST", "/v1/embed", response_model=schemas.EmbedResponse, tags=["embeddings"])
    async def embed(self, body: schemas.EmbedRequest) -> Response:
        """Dense, sparse (token -> weight) and colbert vectors, as asked, in one call."""
        self._check_texts(body.texts, "texts")
        want = [name for name, asked in (("dense", body.return_dense),
                ("sparse", body.return_sparse), ("colbert", body.return_colbert)) if asked]
        items = await self._embed(body.texts, want, body.max_length)
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
        items = await self._embed(texts, ["dense"], None)
        size = len(items[0]["dense"])
        if body.dimensions not in (None, size):
            raise InvalidInput(f"model {self.models['Embedding']!r} has {size} dimensions; "
                               f"dimensions={body.dimensions} is not available",
                               {"field": "dimensions"})
        return _json(schemas.OpenAIEmbeddingResponse.from_items(
            self.models["Embedding"], items, body.encoding_format))

    @route("POST", "/v1/rerank", response_model=schemas.RerankResponse, tags=["rerank"])
    async def rerank(self, body: schemas.RerankRequest) -> dict[str, Any]:
        """Documents ordered by relevance to the query (Cohere v1/TEI response shape; the
        `cohere.Client` works unchanged)."""
        self._check_query_and_documents(body.query, body.texts)
        answer = await self._rerank(body.query, body.texts, RERANK_MAX_LENGTH)
        return schemas.RerankResponse.from_scores(body, answer)

    @route("POST", "/v2/rerank", response_model=schemas.CohereRerankResponse,
           tags=["rerank"])
    async def rerank_v2(self, request: Request,
                        body: schemas.CohereRerankRequest) -> dict[str, Any]:
        """Cohere's v2 rerank: `cohere.ClientV2(base_url=..., api_key=KEY).rerank(...)`."""
        self._check_query_and_documents(body.query, body.documents)
        max_length = min(body.max_tokens_per_doc or RERANK_MAX_LENGTH, 8192)
        answer = await self._rerank(body.query, body.documents, max_length)
        return schemas.CohereRerankResponse.from_scores(
            body, answer, getattr(request.state, "request_id", None) or "rerank")

    async def _rerank(self, query: str, documents: list[str], max_length: int
                      ) -> dict[str, Any]:
        """{"model", "method", "scores"}: from the Rerank deployment, or, for the
        embedding-similarity rerank, from the Embedding's vectors, scored here."""
        if self.similarity_rerank is None:
            return await self._call(self.handles.require("Rerank").rerank.remote(
                query, documents, max_length), "the Rerank deployment")
        items = await self._embed([query, *documents], ["dense"], max_length)
        scores = similarity_scores(items[0]["dense"], [item["dense"] for item in items[1:]])
        return {"model": self.similarity_rerank, "method": SIMILARITY_ENGINE,
                "scores": scores}

    def _check_query_and_documents(self, query: str, documents: list[str]) -> None:
        """Limits, with each document's own index in the field names."""
        self._check_texts([query], "query")
        self._check_texts(documents, "documents")

    # ---- training -----------------------------------------------------------------------

    def _check_training_token(self, token: str | None) -> None:
        secret = self.settings.training_token
        check_token(token, secret.get_secret_value() if secret else None, "X-Training-Token")

    async def _submit(self, kind: Kind, file: UploadFile, options: str,
                      token: str | None) -> Response:
        """Token, options and a free Trainer first; then the archive is checked and extracted
        (nothing of a refused one stays on disk), its samples counted, the job queued."""
        self._check_training_token(token)
        trainer = self.handles.require("Trainer")
        parsed = _parse_options(options, schemas.TrainOptions)
        running = await self._call(trainer.running.remote(), "the Trainer")
        if running is not None:
            raise Conflict(f"training job {running['job_id']} is {running['status']}: one "
                           "training at a time", {"job_id": running["job_id"]})
        datasets = self.settings.training_dir / "datasets"
        await run_in_threadpool(datasets.mkdir, parents=True, exist_ok=True)
        archive = await _save_upload(file, datasets, self.settings.training_max_upload_bytes)
        try:
            root = await run_in_threadpool(extract_zip, archive, datasets, ArchiveLimits())
        finally:
            archive.unlink(missing_ok=True)
        try:
            dataset = await run_in_threadpool(scan_dataset, root, kind)
            refusal = too_few(dataset, self.settings.training_min_samples)
            if refusal is not None:
                raise refusal
        except BaseException:
            await run_in_threadpool(shutil.rmtree, root, True)
            raise
        job = await self._call(trainer.submit.remote(dataset, parsed.model_dump()),
                               "the Trainer")  # it owns the dataset from here on
        return JSONResponse({"job_id": job["job_id"], "status": job["status"]},
                            status_code=202,
                            headers={"Location": f"/v1/train/jobs/{job['job_id']}"})

    @route("POST", "/v1/train", status_code=202, response_model=schemas.JobAccepted,
           tags=["training"], responses={409: {"model": schemas.ErrorBody}})
    async def train(
        self,
        file: UploadFile = File(..., description="A ZIP of line images with .gt.txt files, "
                                "or of page images with PAGE-XML/ALTO carrying line text."),
        options: str = Form("{}", description='TrainOptions as JSON, e.g. {"epochs": 20, '
                            '"name": "family-letters"}'),
        x_training_token: str | None = Header(None, description="OCR_TRAINING_TOKEN."),
    ) -> Response:
        """Train a kraken recognition model on the archive's corrected lines (202: queued;
        follow it at the Location)."""
        return await self._submit("train", file, options, x_training_token)

    @route("POST", "/v1/segtrain", status_code=202, response_model=schemas.JobAccepted,
           tags=["training"], responses={409: {"model": schemas.ErrorBody}})
    async def segtrain(
        self,
        file: UploadFile = File(..., description="A ZIP of page images with PAGE-XML/ALTO "
                                "carrying baselines."),
        options: str = Form("{}", description='TrainOptions as JSON, e.g. {"epochs": 10}'),
        x_training_token: str | None = Header(None, description="OCR_TRAINING_TOKEN."),
    ) -> Response:
        """Train a kraken segmentation model on corrected baselines (202: queued)."""
        return await self._submit("segtrain", file, options, x_training_token)

    @route("GET", "/v1/train/jobs", response_model=list[schemas.TrainJob], tags=["training"])
    async def train_jobs(self) -> list[dict[str, Any]]:
        """The last 10 training jobs, newest first."""
        return await self._call(self.handles.require("Trainer").recent.remote(10),
                                "the Trainer")

    async def _job(self, job_id: str) -> dict[str, Any]:
        job = await self._call(self.handles.require("Trainer").job.remote(job_id),
                               "the Trainer")
        if job is None:
            raise NotFound(f"no training job {job_id!r}", {"job_id": job_id})
        return job

    @route("GET", "/v1/train/jobs/{job_id}", response_model=schemas.TrainJob,
           tags=["training"])
    async def train_job(self, job_id: str) -> dict[str, Any]:
        """One job: status, epochs done, progress, accuracy and CER, its model version."""
        return await self._job(job_id)

    @route("GET", "/v1/train/jobs/{job_id}/events", tags=["training"],
           response_class=StreamingResponse,
           responses={200: {"description": "Server-sent events: `epoch` per finished "
                            "epoch, then `done` or `failed` with the job.",
                            "content": {"text/event-stream": {}}}})
    async def train_events(self, job_id: str) -> StreamingResponse:
        """Server-sent events: one `epoch` event per epoch (from the first), one at the end."""
        trainer = self.handles.require("Trainer")
        first = await self._job(job_id)

        async def events() -> Any:
            after, epochs = 0, first["epochs"]
            while True:
                news = await self._call(trainer.watch.remote(job_id, after), "the Trainer")
                for epoch in news["epochs"]:
                    after = epoch["epoch"]
                    yield _sse("epoch", {"job_id": job_id, **epoch, "epochs": epochs,
                                         "progress": round(min(after / epochs, 1.0), 4)})
                job = news["job"]
                if job is None or job["status"] in ("done", "failed"):
                    if job is not None:
                        yield _sse(job["status"], job)
                    return
                if not news["epochs"]:
                    yield b": still running\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @route("GET", "/v1/models/{name}/versions", response_model=schemas.ModelVersions,
           tags=["training"])
    async def model_versions(self, name: str) -> dict[str, Any]:
        """The versions of a trained model, the active one marked."""
        versions = await self._call(self.handles.require("Trainer").versions.remote(name),
                                    "the Trainer")
        if not versions:
            raise NotFound(f"no trained model {name!r}", {"name": name})
        active = next((v["version"] for v in versions if v["active"]), None)
        return {"name": name, "active": active, "versions": versions}

    @route("POST", "/v1/models/{name}/activate", response_model=schemas.ModelVersion,
           tags=["training"])
    async def activate_model(
        self, name: str, body: schemas.ActivateRequest,
        x_training_token: str | None = Header(None, description="OCR_TRAINING_TOKEN."),
    ) -> dict[str, Any]:
        """Serve this version (also how a rollback is done); the OCR and Segmentation
        replicas load it before their next request."""
        self._check_training_token(x_training_token)
        return await self._call(self.handles.require("Trainer").activate.remote(
            name, body.version), "the Trainer")

    # ---- operations -------------------------------------------------------------------

    async def _describe_models(self) -> list[dict[str, Any]]:
        described = list(await asyncio.gather(
            *(self._call(h.describe.remote(), f"the {name} deployment")
              for name, h in self.handles.model_deployments().items())))
        if self.similarity_rerank is not None:
            described.append(self._similarity_rerank_info())
        return described

    def _similarity_rerank_info(self) -> dict[str, Any]:
        """The rerank this Ingress runs itself: no weights, no GPU, nothing to move."""
        return {"deployment": "Ingress", "node_id": ray.get_runtime_context().get_node_id(),
                "model": self.similarity_rerank, "kind": "rerank", "engine": SIMILARITY_ENGINE,
                "device": "cpu", "placement": "cpu", "moves": 0, "held_mb": 0, "gpu": None,
                "footprint_mb": 0, "gpu_share": 0.0, "gpu_allocated_mb": None,
                "cuda_visible_devices": None, "loaded": True}

    @route("GET", "/v1/models", response_model=list[schemas.ModelInfo], tags=["operations"])
    async def list_models(self) -> list[dict[str, Any]]:
        """Which model each deployment serves, on which device, with what GPU share."""
        return await self._describe_models()

    @route("GET", "/v1/capacity", response_model=schemas.CapacityResponse,
           tags=["operations"])
    async def capacity(self) -> dict[str, Any]:
        """VRAM per GPU, the LLM's share, each model's device and footprint, the profile."""
        capacity, models = await asyncio.gather(
            self._call(self.residency.capacity.remote(), "the ResidencyController"),
            self._describe_models())
        return {**capacity, "models": models}


# A call by value goes to the replica and back in one gRPC message each way (Serve's calls
# between deployments), not through Ray's actor calls and object store: 8-12% more
# embeddings at 8 clients (docs/benchmarks.md). gRPC refuses a message over 4 MB, so only
# requests whose texts (at most 4 bytes a character) and dense answer (at most 4,096
# float32s a text) stay far below it go that way.
BY_VALUE_MAX_TEXTS = 64
BY_VALUE_MAX_CHARS = 256 * 1024
# What a rerank request's pairs (or, by similarity, its texts) are cut to when it names no
# length: FlagReranker's own default.
RERANK_MAX_LENGTH = 512


def travels_by_value(texts: list[str], want: list[str]) -> bool:
    """Whether an embedding call is small enough to go by value (dense vectors only)."""
    return (want == ["dense"] and len(texts) <= BY_VALUE_MAX_TEXTS
            and sum(len(text) for text in texts) <= BY_VALUE_MAX_CHARS)


def _json(data: Any) -> Response:
    """orjson with numpy support: embedding vectors go out without a Python-list detour."""
    return Response(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


def _checked_json(model: type[BaseModel], data: dict[str, Any], exclude_none: bool = False
                  ) -> Response:
    """`data` checked against its route's response model and written as FastAPI would
    write it, in one pass of pydantic's serializer: a 200-page OCR answer takes 4 ms so,
    17 ms through FastAPI's own validate, dump and json.dumps on the event loop."""
    body = model.model_validate(data).model_dump_json(by_alias=True, exclude_none=exclude_none)
    return Response(body, media_type="application/json")


def _parse_options(raw: str, model: type[schemas.OcrOptions] | type[schemas.SegmentOptions]
                   ) -> Any:
    try:
        return model.model_validate_json(raw or "{}")
    except ValidationError as exc:
        summary, fields = field_errors(exc.errors(), prefix="options.")
        raise InvalidInput(f"invalid options: {summary}", fields) from None


async def _read_upload(file: UploadFile, max_bytes: int, charge: Charge) -> bytes:
    """The upload in memory, each MB charged to the byte budget before it is kept."""
    chunks, size = [], 0
    while chunk := await file.read(1 << 20):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"upload is larger than {max_bytes} bytes")
        charge(len(chunk))
        chunks.append(chunk)
    if not size:
        raise InvalidInput("the uploaded file is empty", {"field": "file"})
    return b"".join(chunks)


async def _save_upload(file: UploadFile, folder: Path, max_bytes: int) -> Path:
    """The upload streamed into a new file in `folder`; removed again if it is too large."""
    fd, name = tempfile.mkstemp(prefix="upload-", suffix=".zip", dir=folder)
    path, size = Path(name), 0
    try:
        with open(fd, "wb") as sink:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"upload is larger than {max_bytes} bytes "
                                          "(TRAINING_MAX_UPLOAD_BYTES)")
                await run_in_threadpool(sink.write, chunk)
        if not size:
            raise InvalidInput("the uploaded file is empty", {"field": "file"})
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _source_name(source: schemas.PathSource | schemas.UrlSource) -> str:
    """The document's file name, as ALTO and PAGE-XML cite it."""
    path = source.path if isinstance(source, schemas.PathSource) else urlsplit(source.url).path
    return PurePosixPath(path).name or "document"
