"""Page scheduling of the pipeline, driven without Ray or HTTP: a document is touched by
one thread only and never closed under a render; its bytes count against the budget."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from serve_app.budget import Charge
from serve_app.kernel.documents import Document
from serve_app.kernel.engines import OcrEngines
from serve_app.kernel.errors import Overloaded
from serve_app.kernel.settings import Settings
from serve_app.pipeline import Handles, Pipeline
from serve_app.schemas import OcrOptions, SegmentOptions
from tests.fixtures.documents import mixed_pdf, pages_pdf


class WatchedDocument(Document):
    """A real Document that records which thread touches it and when it is closed."""

    def __init__(self, data: bytes, max_page_pixels: int):
        self.threads = {threading.get_ident()}
        self.rendering = 0
        self.closed_while_rendering = False
        self.closed = threading.Event()
        self.first_render = threading.Event()
        self.release = threading.Event()
        self.release.set()
        super().__init__(data, max_page_pixels)
        WATCHED.append(self)

    def page(self, number: int, dpi: int, force_ocr: bool = False) -> Any:
        self.threads.add(threading.get_ident())
        self.rendering += 1
        try:
            self.first_render.set()
            self.release.wait(30)
            return super().page(number, dpi, force_ocr)
        finally:
            self.rendering -= 1

    def close(self) -> None:
        self.threads.add(threading.get_ident())
        self.closed_while_rendering = self.rendering > 0
        super().close()
        self.closed.set()


WATCHED: list[WatchedDocument] = []


class Segmenter:
    """Stands in for the Segmentation deployment's handle: answers every page at once."""

    class _Method:
        def __init__(self, owner: Segmenter):
            self.owner = owner

        def remote(self, image: np.ndarray) -> Any:
            self.owner.calls += 1

            async def result() -> dict[str, Any]:
                await asyncio.sleep(0)
                return {"lines": [], "regions": [], "model": "blla", "model_version": None}
            return result()

    def __init__(self) -> None:
        self.calls = 0
        self.segment = self._Method(self)


def pipeline(**settings: Any) -> tuple[Pipeline, Segmenter]:
    """A pipeline over a stand-in Segmentation; the tests' clean_env keeps the machine's
    settings (which win over these) out."""
    segmenter = Segmenter()
    built = Pipeline(Settings(OCR_SIDECAR_API_KEY="k", OCR_PAGES_IN_FLIGHT=8, **settings),
                     Handles(segmentation=segmenter), None)  # type: ignore[arg-type]
    built.open_document = WatchedDocument
    WATCHED.clear()
    return built, segmenter


def loader(data: bytes) -> Any:
    async def load(charge: Charge) -> bytes:
        charge(len(data))
        return data
    return load


def test_every_page_of_a_document_is_rendered_on_one_thread_that_also_closes_it(
        clean_env: pytest.MonkeyPatch) -> None:
    built, segmenter = pipeline()
    read = asyncio.run(built.segment(loader(pages_pdf(6)), SegmentOptions(dpi=50)))
    assert [page["page"] for page in read.pages] == [1, 2, 3, 4, 5, 6]
    assert segmenter.calls == 6
    [doc] = WATCHED
    assert doc.closed.wait(10)
    assert len(doc.threads - {threading.get_ident()}) == 1  # opened, rendered, closed there
    assert not doc.closed_while_rendering


def test_a_cancelled_request_closes_its_document_only_after_the_running_render(
        clean_env: pytest.MonkeyPatch) -> None:
    built, _ = pipeline()

    async def cancel_during_a_render() -> None:
        task = asyncio.create_task(built.segment(loader(pages_pdf(4)),
                                                 SegmentOptions(dpi=50)))
        while not WATCHED:
            await asyncio.sleep(0)
        doc = WATCHED[0]
        doc.release.clear()  # the next render blocks until released
        await asyncio.to_thread(doc.first_render.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not doc.closed.is_set()  # a render still runs: the close waits behind it
        doc.release.set()
        assert await asyncio.to_thread(doc.closed.wait, 10)
        assert not doc.closed_while_rendering

    asyncio.run(cancel_during_a_render())
    assert built.budget.held == 0


def test_documents_beyond_the_byte_budget_are_refused_and_the_budget_comes_back(
        clean_env: pytest.MonkeyPatch) -> None:
    data = pages_pdf(1)
    built, segmenter = pipeline(OCR_MAX_UPLOAD_BYTES=len(data),
                                OCR_MAX_BYTES_IN_FLIGHT=len(data) + len(data) // 2)

    async def two_at_once() -> None:
        first = asyncio.create_task(built.segment(loader(data), SegmentOptions(dpi=50)))
        while not WATCHED:
            await asyncio.sleep(0)
        WATCHED[0].release.clear()  # hold the first document's render
        assert built.budget.held == len(data)
        with pytest.raises(Overloaded) as refused:
            await built.segment(loader(data), SegmentOptions(dpi=50))
        assert refused.value.headers["Retry-After"]
        assert segmenter.calls == 0
        WATCHED[0].release.set()
        await first

    asyncio.run(two_at_once())
    assert built.budget.held == 0
    asyncio.run(built.segment(loader(data), SegmentOptions(dpi=50)))  # room again
    assert segmenter.calls == 2


class Recognizer:
    """Stands in for the OCR deployment's handle: reads every page as one line."""

    class _Method:
        def __init__(self, owner: Recognizer):
            self.owner = owner

        def remote(self, image: np.ndarray, engine: str, options: dict[str, Any]) -> Any:
            self.owner.pages += 1

            async def result() -> dict[str, Any]:
                return {"engine": "rapidocr", "lines": [
                    {"text": "read from pixels", "bbox": (0, 0, 1, 1), "confidence": 0.9}]}
            return result()

    def __init__(self) -> None:
        self.pages = 0
        self.recognize = self._Method(self)


@pytest.mark.parametrize(("processes", "room_for_copies", "readers_used"),
                         [(0, True, False), (2, True, True), (2, False, False)])
def test_a_long_mixed_pdf_reads_text_pages_from_their_layer_and_sends_only_scans_to_ocr(
        clean_env: pytest.MonkeyPatch, processes: int, room_for_copies: bool,
        readers_used: bool) -> None:
    recognizer = Recognizer()
    data = mixed_pdf(40, scanned={3, 38})
    backwards = ",".join(str(number) for number in range(40, 0, -1))
    # Without room for the readers' two copies, the render thread reads the text layers.
    budget = 3 * len(data) if room_for_copies else 2 * len(data)
    built = Pipeline(Settings(OCR_SIDECAR_API_KEY="k", OCR_TEXT_LAYER_PROCESSES=processes,
                              OCR_MAX_BYTES_IN_FLIGHT=budget),
                     Handles(ocr=recognizer),  # type: ignore[arg-type]
                     OcrEngines(("rapidocr",)))
    try:
        read = asyncio.run(built.ocr(loader(data), OcrOptions(dpi=50, pages=backwards)))
        assert (built.text_layers._pool is not None) == readers_used
    finally:
        built.text_layers.close()
    assert [page["page"] for page in read.pages] == list(range(40, 0, -1))
    assert recognizer.pages == 2
    for page in read.pages:
        if page["page"] in (3, 38):
            assert (page["source"], page["text"]) == ("ocr", "read from pixels")
        else:
            assert page["source"] == "text-layer"
            assert page["text"].splitlines()[0] == f"page {page['page']}"
    assert built.budget.held == 0
