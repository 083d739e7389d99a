"""The text layers of long PDFs, read by worker processes in parallel.

PyMuPDF holds the GIL while it extracts text, so threads in the ingress cannot read two
pages at once (measured: two threads on two halves of a document are no faster than
one); processes can. A long document's selected pages are split into one run per
process; each process opens its own copy of the document (a PyMuPDF document is never
shared between threads, let alone processes) and sends back its born-digital pages,
finished. Pages without a text layer are left to the ingress's render thread. Documents
too short to give every process MIN_PAGES_PER_RUN pages stay on that thread altogether:
for them the trip to a process costs more than it saves. So do documents whose copies
would not fit the ingress's byte budget (OCR_MAX_BYTES_IN_FLIGHT): the copies are
memory like the document itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from serve_app.budget import Charge
from serve_app.calls import RETRY_AFTER_S
from serve_app.kernel.documents import Page, blank_pdf, text_pages
from serve_app.kernel.errors import Overloaded, PayloadTooLarge, UpstreamTimeout

logger = logging.getLogger("ocr_graph.text_layers")

MIN_PAGES_PER_RUN = 16


def runs(numbers: list[int], processes: int) -> list[list[int]]:
    """`numbers` in contiguous runs, one per process, each of at least MIN_PAGES_PER_RUN
    pages; fewer than two runs: [] (not worth a process)."""
    count = min(processes, len(numbers) // MIN_PAGES_PER_RUN)
    if count < 2:
        return []
    size, extra = divmod(len(numbers), count)
    bounds = [index * size + min(index, extra) for index in range(count + 1)]
    return [numbers[start:end] for start, end in itertools.pairwise(bounds)]


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """A spawned process first re-imports its parent's __main__ module: in a Ray worker
    that is Ray's worker script, all of Ray, 200 MB in every reader. Hidden while the
    processes spawn, they import only what reading a text layer needs."""
    main = sys.modules["__main__"]
    saved = main.__dict__.pop("__file__", None), main.__dict__.get("__spec__")
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = saved[1]
        if saved[0] is not None:
            main.__file__ = saved[0]


class TextLayerReaders:
    """A pool of `processes` worker processes (spawned: the ingress runs threads, which a
    fork would copy mid-state), started with the ingress and rebuilt if one dies or
    overruns its deadline."""

    def __init__(self, processes: int, deadline_s: float,
                 read_pages: Callable[..., list[Page | None]] = text_pages):
        self.processes, self.deadline_s = processes, deadline_s
        self.read_pages = read_pages  # what a process runs on its pages: text_pages
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Spawn the processes now, so the first long document does not wait for them. A
        host where processes cannot be spawned (no /dev/shm for their locks) reads every
        text layer on the render thread, and the log says so."""
        if self.processes < 2 or self._pool is not None:
            return
        try:
            pool = ProcessPoolExecutor(self.processes,
                                       mp_context=multiprocessing.get_context("spawn"))
            # Each submit spawns a process until all run; each reads a blank page, so the
            # first document finds PyMuPDF imported. What they run must come from the
            # kernel: a function of this module would make them import Ray.
            with _main_module_hidden():
                for _ in range(self.processes):
                    pool.submit(text_pages, blank_pdf(), [1], 72, 1)
        except OSError as exc:
            logger.warning("text-layer processes cannot start (%s): long PDFs' text layers "
                           "are read on one thread; give the container a /dev/shm or set "
                           "OCR_TEXT_LAYER_PROCESSES=0 to silence this", exc)
            self.processes = 0
            return
        self._pool = pool

    async def read(self, data: bytes, numbers: list[int], dpi: int, max_page_pixels: int,
                   charge: Charge) -> dict[int, Page] | None:
        """The born-digital pages among `numbers`, by number (the others have no text
        layer); None for a document too short to split, or whose copies do not fit the
        request's byte budget (`charge`): the ingress's render thread reads those."""
        split = runs(numbers, self.processes)
        if not split:
            return None
        try:  # each process holds a copy of the document while it reads
            charge(len(data) * len(split))
        except (Overloaded, PayloadTooLarge):  # no room now, or never for the copies
            return None
        self.start()
        pool = self._pool
        if pool is None:  # processes cannot start on this host
            return None
        loop = asyncio.get_running_loop()
        try:
            found = await asyncio.wait_for(asyncio.gather(*(
                loop.run_in_executor(pool, self.read_pages, data, run, dpi, max_page_pixels)
                for run in split)), self.deadline_s)
        except BrokenProcessPool:
            # A worker died: the kernel's OOM killer, or a PDF that crashes MuPDF (which
            # would otherwise have taken the ingress with it). The next request gets a new
            # pool; this one may be retried.
            logger.warning("a text-layer process died; starting new ones")
            self._discard(pool)
            raise Overloaded("a process reading the PDF's text layer died (out of memory, "
                             "or a PDF that crashes its reader): retry shortly",
                             headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except TimeoutError:
            # A PDF that keeps MuPDF busy: unlike the render thread, a process can be
            # stopped, and the next request gets new ones.
            logger.warning("text-layer processes overran %g s; stopping them", self.deadline_s)
            self._discard(pool)
            raise UpstreamTimeout(
                f"reading the PDF's text layer took longer than {self.deadline_s:g} s "
                "(DEPLOYMENT_CALL_TIMEOUT_S)", {"deadline_s": self.deadline_s}) from None
        return {page.number: page for run in found for page in run if page is not None}

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Stop `pool`'s processes, whatever they are doing; the next read starts new ones."""
        if self._pool is pool:
            self._pool = None
        processes = list((pool._processes or {}).values())  # no public handle before 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()

    def close(self) -> None:
        if self._pool is not None:
            self._discard(self._pool)
