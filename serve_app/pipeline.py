"""Documents through the model deployments: pages scheduled, OCR and segmentation composed.

Plain Python over deployment handles, so it can be driven without HTTP. A document is
opened once, on a thread of its own that does every render and finally closes it
(PyMuPDF documents are not thread-safe); its selected pages are rendered one at a time
and at most OCR_PAGES_IN_FLIGHT of them are in flight to the deployments, so a 200-page
PDF never holds 200 page images. A long PDF's text layers are read first, by worker
processes in parallel (serve_app/text_layers.py), each on its own copy of the document.
A document's bytes count against the ingress's byte budget while the request lasts.
Born-digital pages come from their text layer; engines that read baseline lines
(kraken) get each page segmented by the Segmentation deployment first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ray.serve.handle import DeploymentHandle

from serve_app.budget import Charge, document_bytes
from serve_app.calls import answer
from serve_app.kernel.documents import Document, Page, parse_pages
from serve_app.kernel.engines import OcrEngines
from serve_app.kernel.errors import Unavailable
from serve_app.kernel.pages import OcrPage, SegmentPage, page_text
from serve_app.kernel.settings import Settings
from serve_app.schemas import OcrOptions, PageOptions
from serve_app.text_layers import TextLayerReaders

Result = TypeVar("Result", OcrPage, SegmentPage)
# What reads a request's document: told each part's size before it is held.
Load = Callable[[Charge], Awaitable[bytes]]


@dataclass(frozen=True)
class PagesRead(Generic[Result]):
    """What a document gave: its page count, the selected pages read, and the selected
    page numbers it does not have."""

    page_count: int
    pages: list[Result]
    missing: list[int]


@dataclass(frozen=True)
class Handles:
    """The model deployments of this application; None where the app leaves one out."""

    ocr: DeploymentHandle | None = None
    segmentation: DeploymentHandle | None = None
    embedding: DeploymentHandle | None = None
    rerank: DeploymentHandle | None = None
    trainer: DeploymentHandle | None = None

    def require(self, name: str) -> DeploymentHandle:
        """The handle of a deployment by its name ("OCR", ...), or 503 saying it is absent."""
        handle = self._all().get(name)
        if handle is None:
            raise Unavailable(f"the {name} deployment is not part of this application")
        return handle

    def _all(self) -> dict[str, DeploymentHandle | None]:
        return {"OCR": self.ocr, "Segmentation": self.segmentation,
                "Embedding": self.embedding, "Rerank": self.rerank, "Trainer": self.trainer}

    def deployed(self) -> dict[str, DeploymentHandle]:
        """Every deployment of the application (readiness)."""
        return {name: handle for name, handle in self._all().items() if handle is not None}

    def model_deployments(self) -> dict[str, DeploymentHandle]:
        """The deployments that serve a model (/v1/models, /v1/capacity)."""
        return {name: handle for name, handle in self.deployed().items() if name != "Trainer"}


class Pipeline:
    """OCR and segmentation of whole documents."""

    def __init__(self, settings: Settings, handles: Handles, ocr_engines: OcrEngines | None):
        self.settings = settings
        self.handles = handles
        self.ocr_engines = ocr_engines
        self.budget = document_bytes(settings.max_bytes_in_flight)
        self.text_layers = TextLayerReaders(settings.text_layer_processes,
                                            settings.call_timeout_s)
        self.open_document: Callable[[bytes, int], Document] = Document

    async def ocr(self, load: Load, options: OcrOptions
                  ) -> PagesRead[OcrPage]:
        """The selected pages read. Everything that can be
        checked is checked before `load` runs: a request that cannot succeed never
        downloads or reads anything."""
        ocr = self.handles.require("OCR")
        assert self.ocr_engines is not None  # the builder gives one with the OCR handle
        engine = self.ocr_engines.check(options.engine)
        segmentation = (self.handles.require("Segmentation")
                        if self.ocr_engines.reads_baselines(engine) else None)
        deadline = self.settings.call_timeout_s
        engine_options = {"languages": options.languages,
                          "llm": options.llm.model_dump() if options.llm else None}

        async def read(page: Page) -> OcrPage:
            base = {"page": page.number, "width": page.width, "height": page.height,
                    "dpi": page.dpi}
            if page.text_lines is not None:
                return OcrPage(**base, source="text-layer", engine="text-layer",
                               lines=page.text_lines, text=page_text(page.text_lines),
                               timing_ms=0.0)
            page_options = {**engine_options, "dpi": page.dpi}
            if segmentation is not None:
                found = await answer(segmentation.segment.remote(page.image), deadline,
                                     "the Segmentation deployment")
                page_options = {**page_options, "segmentation": found["lines"]}
            read = await answer(ocr.recognize.remote(page.image, engine, page_options),
                                deadline, "the OCR deployment")
            result = OcrPage(**base, source="ocr", engine=read["engine"],
                             lines=read["lines"], text=page_text(read["lines"]),
                             timing_ms=0.0, pixels=page.pixels)
            if read.get("model"):
                result.update(model=read["model"]["name"],
                              model_version=read["model"]["version"])
            if read.get("reason"):
                result["engine_reason"] = read["reason"]
            return result

        return await self._pages(load, options, options.force_ocr, read)

    async def segment(self, load: Load, options: PageOptions
                      ) -> PagesRead[SegmentPage]:
        """The baselines and regions of the selected pages."""
        segmentation = self.handles.require("Segmentation")
        deadline = self.settings.call_timeout_s

        async def read(page: Page) -> SegmentPage:
            found = await answer(segmentation.segment.remote(page.image), deadline,
                                 "the Segmentation deployment")
            return SegmentPage(page=page.number, width=page.width, height=page.height,
                               lines=found["lines"], regions=found["regions"], timing_ms=0.0,
                               model=found["model"], model_version=found["model_version"])

        return await self._pages(load, options, True, read)

    async def _pages(self, load: Load, options: PageOptions, force_ocr: bool,
                     read: Callable[[Page], Awaitable[Result]]) -> PagesRead[Result]:
        """Load the document within the byte budget, render its selected pages on its own
        thread one after another, keep at most OCR_PAGES_IN_FLIGHT of them in flight, run
        `read` on each concurrently; each result gets its timing."""
        with self.budget.hold() as charge:
            data = await load(charge)
            loop = asyncio.get_running_loop()
            renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
            try:
                doc = await loop.run_in_executor(renderer, self.open_document, data,
                                                 self.settings.max_page_pixels)
            except BaseException:
                renderer.shutdown(wait=False)
                raise
            try:
                return await self._read_pages(doc, data, charge, renderer, options, force_ocr,
                                              read)
            finally:
                # Queued behind a render that may still run (a cancelled request does not
                # stop a thread), on the document's own thread: never closed under a render.
                renderer.submit(doc.close)
                renderer.shutdown(wait=False)

    async def _read_pages(self, doc: Document, data: bytes, charge: Charge,
                          renderer: ThreadPoolExecutor, options: PageOptions, force_ocr: bool,
                          read: Callable[[Page], Awaitable[Result]]) -> PagesRead[Result]:
        loop = asyncio.get_running_loop()
        page_count = doc.page_count
        numbers, missing = parse_pages(options.pages, page_count, self.settings.max_pages)
        slots = asyncio.Semaphore(self.settings.pages_in_flight)
        # A long PDF's text layers are read by worker processes, all at once; the pages
        # they did not return have none, and are rendered without looking again.
        text_pages: dict[int, Page] | None = None
        if not force_ocr and doc.kind == "pdf":
            text_pages = await self.text_layers.read(data, numbers, options.dpi,
                                                     self.settings.max_page_pixels, charge)
        render_only = force_ocr or text_pages is not None

        async def one(number: int) -> Result:
            started = time.perf_counter()
            try:
                page = text_pages.pop(number, None) if text_pages else None
                if page is None:
                    page = await loop.run_in_executor(renderer, doc.page, number, options.dpi,
                                                      render_only)
                result = await read(page)
            finally:
                slots.release()
            result["timing_ms"] = round((time.perf_counter() - started) * 1000, 1)
            return result

        tasks = []
        try:
            for number in numbers:
                await slots.acquire()
                tasks.append(asyncio.create_task(one(number)))
            results: list[Any] = await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:  # the client went away: its pages stop too
            for task in tasks:
                task.cancel()
            raise
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return PagesRead(page_count, results, missing)
