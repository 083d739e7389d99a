"""Pydantic request/response models: the HTTP contract, as /openapi.json shows it.

Page results use the kernel's page model (serve_app/kernel/pages.py), the types the
engines build. Responses are shaped here too (`from_...` class methods), so a route only
parses, calls and returns. Those return plain dicts: vectors stay numpy arrays until
orjson writes them.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.kernel.formats import to_alto, to_hocr, to_page_xml
from serve_app.kernel.pages import OcrPage, SegmentPage

# The engine names of deployments/engines/ocr's registry, and auto; a unit test holds the
# two together (the HTTP side may not import the deployments).
Engine = Literal["auto", "rapidocr", "tesseract", "surya", "kraken", "llm", "ensemble"]


class Strict(BaseModel):
    """Unknown fields are an error, so a typo never silently changes nothing."""

    model_config = ConfigDict(extra="forbid")


class PathSource(Strict):
    """A file under OCR_SIDECAR_UPLOAD_BASE: relative to it, or absolute inside it."""

    path: str = Field(min_length=1, max_length=4096, examples=["inbox/letter-1911.pdf"])


class UrlSource(Strict):
    """An http(s) URL whose host is in ALLOWED_PDF_HOSTS."""

    url: str = Field(min_length=1, max_length=4096,
                     examples=["https://dms.example.org/files/42.pdf"])


Source = PathSource | UrlSource


class PageOptions(Strict):
    pages: str | None = Field(
        None, description="Pages to process, e.g. '1-3,7'; all pages when omitted.",
        examples=["1-3,7"], max_length=200,
    )
    dpi: int = Field(300, ge=50, le=600, description="Render resolution for scanned pages.")


class LlmOptions(Strict):
    """For engine llm: passed to every page's call as given; keep_alive is the service's."""

    model: str | None = Field(None, max_length=200, examples=["scb10x/typhoon-ocr-7b"],
                              description="Ollama model; the configured one when omitted.")
    runtime_params: dict[str, float | int | str | bool] = Field(
        default_factory=dict, examples=[{"temperature": 0.1, "top_p": 0.6, "num_predict": 4096}],
        description="Ollama options (temperature, top_p, repeat_penalty, num_predict, ...).")
    system_prompt: str | None = Field(None, max_length=20_000)
    dms_tags: list[str] = Field(default_factory=list, max_length=100,
                                examples=[["Testament", "Familie Müller"]])

    @model_validator(mode="after")
    def _no_keep_alive(self) -> LlmOptions:
        if "keep_alive" in self.runtime_params:
            raise ValueError("keep_alive is set by the residency profile, not by clients")
        return self


class OcrOptions(PageOptions):
    engine: Engine = Field(
        "auto", description="auto: the text layer of born-digital pages; for scans, "
        "tesseract when languages name German or Fraktur, else the page's script decides "
        "(tesseract's script detection): Fraktur print goes to ensemble (tesseract and "
        "rapidocr voting) where deployed, else to tesseract Fraktur; other pages to the "
        "configured OCR engine. Each page says what ran and why (engine_reason).")
    languages: list[str] = Field(default_factory=list, max_length=8, examples=[["deu", "eng"]])
    formats: list[Literal["json", "text", "alto", "page", "hocr"]] = Field(
        default_factory=lambda: ["json"], min_length=1,
        description="json: pages with lines and geometry; text: the whole text in one string; "
        "alto: one ALTO 4.4 document; page: a PAGE-XML 2019 document per page; hocr: one "
        "hOCR document.",
    )
    force_ocr: bool = Field(False, description="OCR born-digital pages instead of reading "
                            "their text layer.")
    llm: LlmOptions | None = Field(None, description="Options of the llm engine.")


class OcrRequest(OcrOptions):
    source: Source

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"source": {"path": "inbox/scan.pdf"}, "pages": "1-2", "formats": ["json", "text"]}
    ]})


class OcrResponse(BaseModel):
    page_count: int = Field(description="Pages in the whole document.")
    missing_pages: list[int] | None = Field(
        None, description="Selected pages the document does not have (left out).")
    pages: list[OcrPage] | None = None
    text: str | None = None
    alto: str | None = Field(None, description="ALTO 4.4 XML, a Page per selected page.")
    page_xml: list[str] | None = Field(None, description="PAGE-XML 2019-07-15, one document "
                                       "per selected page.")
    hocr: str | None = Field(None, description="hOCR 1.2 XHTML, an ocr_page per page.")

    @classmethod
    def from_pages(cls, read: Any, formats: list[str], name: str) -> dict[str, Any]:
        """The asked formats, all from the same pages (a pipeline's PagesRead); `name` is
        the file ALTO and PAGE-XML cite."""
        pages: list[OcrPage] = read.pages
        result: dict[str, Any] = {"page_count": read.page_count}
        if read.missing:
            result["missing_pages"] = read.missing
        engines = [page["engine"] for page in pages]
        if "json" in formats:
            result["pages"] = pages
        if "text" in formats:
            result["text"] = "\n\n".join(page["text"] for page in pages)
        if "alto" in formats:
            result["alto"] = to_alto(pages, engines)
        if "page" in formats:
            result["page_xml"] = [to_page_xml(page, f"{name}#page={page['page']}")
                                  for page in pages]
        if "hocr" in formats:
            result["hocr"] = to_hocr(pages, engines)
        return result


class SegmentOptions(PageOptions):
    pass


class SegmentRequest(SegmentOptions):
    source: Source

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"source": {"path": "letters/1911-05-02.png"}}
    ]})


class SegmentResponse(BaseModel):
    model: str
    page_count: int
    missing_pages: list[int] = Field(
        default_factory=list, description="Selected pages the document does not have.")
    pages: list[SegmentPage]

    @classmethod
    def from_pages(cls, model: str, read: Any) -> dict[str, Any]:
        return {"model": model, "page_count": read.page_count, "missing_pages": read.missing,
                "pages": read.pages}


class EmbedRequest(Strict):
    texts: list[str] = Field(min_length=1, examples=[["Sehr geehrter Herr Müller,"]])
    return_dense: bool = True
    return_sparse: bool = Field(False, description="Token weights (BGE-M3 only).")
    return_colbert: bool = Field(False, description="Per-token vectors (BGE-M3 only).")
    max_length: int | None = Field(None, ge=8, le=8192, description="Token limit per text; "
                                   "longer texts are truncated and say so.")

    @model_validator(mode="after")
    def _wants_something(self) -> EmbedRequest:
        if not (self.return_dense or self.return_sparse or self.return_colbert):
            raise ValueError("ask for at least one of return_dense, return_sparse, return_colbert")
        return self


class Embedding(BaseModel):
    index: int
    dense: list[float] | None = None
    sparse: dict[str, float] | None = None
    colbert: list[list[float]] | None = None
    tokens: int
    truncated: bool


class EmbedResponse(BaseModel):
    model: str
    data: list[Embedding]
    usage: dict[str, int]

    @classmethod
    def from_items(cls, model: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """The Embedding deployment's items, numbered, with the token usage."""
        data = [{**item, "index": index} for index, item in enumerate(items)]
        return {"model": model, "data": data, "usage": _usage(items)}


def _usage(items: list[dict[str, Any]]) -> dict[str, int]:
    tokens = sum(item["tokens"] for item in items)
    return {"prompt_tokens": tokens, "total_tokens": tokens}


class OpenAIEmbeddingRequest(BaseModel):
    """The OpenAI embeddings request; unknown fields are ignored as OpenAI does."""

    input: str | list[str] = Field(examples=[["Sehr geehrter Herr Müller,"]],
                                   description="Text or texts (token-id input is not supported).")
    model: str = Field("default", description="Ignored: the deployed model answers, and the "
                       "response names it.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, description="Must equal the model's size.")
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_ids(cls, value: Any) -> Any:
        """Token ids belong to the client's tokenizer, not to the deployed model: say so
        and how to send text instead, rather than a type error."""
        if isinstance(value, list) and value and not isinstance(value[0], str):
            raise ValueError("token-id input is not supported: send the texts themselves "
                             "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))")
        return value


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian "
                                         "float32 when encoding_format is base64.")


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: dict[str, int]

    @classmethod
    def from_items(cls, model: str, items: list[dict[str, Any]],
                   encoding_format: Literal["float", "base64"]) -> dict[str, Any]:
        """OpenAI's list of embeddings: floats, or base64 of little-endian float32."""
        data = [{"object": "embedding", "index": index,
                 "embedding": _base64(item["dense"]) if encoding_format == "base64"
                 else item["dense"]}
                for index, item in enumerate(items)]
        return {"object": "list", "data": data, "model": model, "usage": _usage(items)}


def _base64(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


class RerankDocument(Strict):
    """A document as Cohere's clients may send it."""

    text: str


class RerankRequest(Strict):
    query: str = Field(min_length=1, examples=["Testament der Großmutter"])
    documents: list[str | RerankDocument] = Field(
        min_length=1, examples=[["Kaufvertrag 1923", "Testament 1951"]],
        description="Texts, or {\"text\": ...} objects as Cohere's v1 client sends them.")
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False
    model: str | None = Field(None, max_length=200, description="Accepted as rerank "
                              "clients send it; the deployed model answers, and the "
                              "response names it.")

    @property
    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class CohereRerankRequest(Strict):
    """Cohere's v2 rerank request (`cohere.ClientV2().rerank`)."""

    model: str = Field(max_length=200, description="Accepted; the deployed model answers.")
    query: str = Field(min_length=1)
    documents: list[str] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1, le=8192)


class CohereRerankResult(BaseModel):
    index: int
    relevance_score: float


class CohereRerankResponse(BaseModel):
    """Cohere's v2 rerank response."""

    id: str
    results: list[CohereRerankResult]
    meta: dict[str, Any]

    @classmethod
    def from_scores(cls, request: CohereRerankRequest, answer: dict[str, Any],
                    request_id: str) -> dict[str, Any]:
        scores = answer["scores"]
        order = sorted(range(len(request.documents)), key=lambda i: -scores[i])
        return {"id": request_id,
                "results": [{"index": i, "relevance_score": scores[i]}
                            for i in order[: request.top_n]],
                "meta": {"api_version": {"version": "2"},
                         "billed_units": {"search_units": 1}, "model": answer["model"]}}


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: str | None = None


class RerankResponse(BaseModel):
    model: str
    method: Literal["cross-encoder", "embedding-similarity"]
    results: list[RerankResult]

    @classmethod
    def from_scores(cls, request: RerankRequest, answer: dict[str, Any]) -> dict[str, Any]:
        """The documents by falling score, the best top_n of them."""
        scores, texts = answer["scores"], request.texts
        order = sorted(range(len(texts)), key=lambda i: -scores[i])
        results = [{"index": i, "relevance_score": scores[i],
                    "document": texts[i] if request.return_documents else None}
                   for i in order[: request.top_n]]
        return {"model": answer["model"], "method": answer["method"], "results": results}


class Placement(BaseModel):
    device: Literal["gpu", "cpu"]
    since: float
    reason: str


class ModelRef(BaseModel):
    """A trained model and one of its versions."""

    name: str
    version: int | None = Field(description="null: not (yet) a version, e.g. a job that "
                                "has not finished.")


class ModelInfo(BaseModel):
    deployment: str
    node_id: str | None = Field(None, description="The Ray node the replica runs on.")
    model: str
    kind: str
    engine: str
    device: str = Field(description="The replica's own report of where its weights are: "
                        "cuda or cpu (cuda also while it holds its share of a simulated GPU).")
    placement: Literal["gpu", "cpu"] = Field(
        description="The residency controller's decision for this replica, as it last "
        "heard it; device follows within one poll plus the move's own time.")
    moves: int = Field(description="Moves this replica made since it started.")
    held_mb: int = Field(0, description="VRAM the replica reports holding on its GPU.")
    gpu: str | None = Field(None, description="The GPU Ray gave the replica: "
                            "'<node id>:<index>'.")
    footprint_mb: int
    gpu_share: float = Field(description="Ray's logical num_gpus of each replica.")
    gpu_allocated_mb: int | None = Field(description="torch's allocated CUDA memory.")
    cuda_visible_devices: str | None
    loaded: bool
    engines: list[str] | None = Field(None, description="OCR: the engines a request may name.")
    unavailable_engines: dict[str, str] | None = Field(
        None, description="OCR: configured engines missing on this node, and why.")
    trained_models: list[ModelRef] | None = Field(
        None, description="Models trained here that this replica serves, with the version.")


class GpuProcess(BaseModel):
    pid: int
    name: str = Field(description="ocr-graph: what our replicas report holding.")
    used_mb: int


class GpuInfo(BaseModel):
    key: str = Field(description="'<node id>:<index>': residency decides per GPU.")
    index: int
    name: str
    total_mb: int
    used_mb: int
    free_mb: int
    llm_used_mb: int
    processes: list[GpuProcess]
    placements: dict[str, Placement] = Field(description="The controller's decision per "
                                             "deployment with a replica on this GPU.")




class ResidencyDecision(BaseModel):
    deployment: str
    device: Literal["gpu", "cpu"]
    reason: str
    at: float = Field(description="Controller time of the decision (seconds).")


class KeepAlive(BaseModel):
    busy: str = Field(description="Sent while more of our pages wait for the VLM.")
    idle: str = Field(description="Sent with the last page in flight.")
    reason: str


class ReplicaState(BaseModel):
    replica: str
    deployment: str
    gpu: str | None
    device: Literal["cuda", "cpu"]
    held_mb: int
    at: float


class CapacityResponse(BaseModel):
    gpu_available: bool
    note: str | None = None
    gpus: list[GpuInfo]
    profile: str
    llm_reserved_mb: int
    llm_keep_alive: KeepAlive = Field(description="keep_alive the llm OCR engine sends to "
                                      "Ollama, computed from the live VRAM each poll.")
    polls: int = Field(description="VRAM polls the residency controller has made.")
    placements: dict[str, Placement] = Field(description="The decisions for the first GPU.")
    replicas: list[ReplicaState] = Field(description="What each replica last reported.")
    models: list[ModelInfo]
    decisions: list[ResidencyDecision] = Field(description="Newest first.")


class TrainOptions(Strict):
    """The `options` form field of /v1/train and /v1/segtrain."""

    epochs: int = Field(1, ge=1, description="Epochs to train (at most TRAINING_MAX_EPOCHS).")
    base_model: str | None = Field(
        None, max_length=64, examples=["archive-rec"],
        description="Fine-tune the active version of this trained model; for segtrain also "
        "'blla' (kraken's bundled model, the default for segtrain). Omitted for train: a "
        "new model.")
    name: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", examples=["family-letters"],
        description="The model the result becomes a version of (default archive-rec for "
        "train, archive-seg for segtrain).")


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["queued"]


class TrainJob(BaseModel):
    job_id: str
    kind: Literal["train", "segtrain"]
    status: Literal["queued", "running", "done", "failed"]
    epochs: int
    epochs_done: int
    progress: float = Field(ge=0.0, le=1.0)
    accuracy: float | None = Field(description="kraken's selection metric of the last "
                                   "epoch: character accuracy (train), mean IoU of the "
                                   "baseline map (segtrain).")
    cer: float | None = Field(description="1 - accuracy.")
    best_checkpoint: str | None
    model: ModelRef
    base_model: str | None
    samples: int = Field(description="Lines (train) or pages (segtrain) trained on.")
    device: str | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class ModelVersion(BaseModel):
    name: str
    version: int
    active: bool
    kind: str | None
    accuracy: float | None
    job_id: str | None
    created_at: str


class ModelVersions(BaseModel):
    name: str
    active: int | None = Field(description="The active version; null when none is.")
    versions: list[ModelVersion] = Field(description="Oldest first: the active one and at "
                                         "most three backups.")


class ActivateRequest(Strict):
    version: int = Field(ge=1, examples=[3], description="The version to serve (an older "
                         "one for a rollback).")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_input"])
    message: str
    detail: Any = None
    request_id: str | None = None


class ErrorBody(BaseModel):
    """The one error body of every route."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    deployments: dict[str, str] = Field(default_factory=dict)


class DeploymentReadiness(BaseModel):
    status: str = Field(examples=["HEALTHY"], description="Serve's deployment status: "
                        "HEALTHY, UPDATING, UPSCALING, DOWNSCALING, UNHEALTHY, ...")
    running: int = Field(description="Replicas running and passing their health checks.")
    replicas: dict[str, int] = Field(examples=[{"RUNNING": 1, "STARTING": 1}],
                                     description="Replicas by state.")
    message: str | None = Field(None, description="Why a deployment is not healthy.")


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    deployments: dict[str, DeploymentReadiness] = Field(default_factory=dict)
    message: str | None = None
