"""What an ingress replica holds at once, counted in the unit that costs: bytes of
documents, texts sent to the Embedding.

Request counts alone bound neither: 256 uploads of 100 MB each are 25 GB, and 80 queued
requests are 80 texts or 20,480. Every document's bytes are charged as they arrive (chunk
by chunk for uploads and URLs, by size before reading for files under the upload base);
an embedding request's texts before it is sent. What was charged is released when the
request ends; a charge past the limit is a 503 with Retry-After, before the work starts,
and a request that alone needs more than the limit is a 413: no retry would fit it.

A budget also says when it is as good as full (`refusal`): the front door then refuses
before reading a body, because reading and parsing one only to refuse it costs the front
more than the refusals queued behind it can wait (bench/overload.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from serve_app.calls import RETRY_AFTER_S
from serve_app.kernel.errors import Overloaded, PayloadTooLarge

Charge = Callable[[int], None]
# A budget with less than 1/NEARLY_FULL of its limit left may refuse every request.
NEARLY_FULL = 16


class Budget:
    """A shared allowance of `unit`s; charged from the event loop and from the threads
    that read files, hence the lock."""

    def __init__(self, limit: int, unit: str, setting: str, holding: str):
        self.limit, self.unit, self.setting, self.holding = limit, unit, setting, holding
        self.held = 0
        self.holders = 0  # requests holding a charge now
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[Charge]:
        """A charge function for one request; what it charged is given back when the block
        ends, however it ends."""
        charged = 0

        def charge(size: int) -> None:
            nonlocal charged
            with self._lock:
                if charged + size > self.limit:
                    raise PayloadTooLarge(
                        f"this request needs {charged + size} {self.holding}, more than the "
                        f"service ever holds at once ({self.setting}={self.limit})",
                        {f"needed_{self.unit}": charged + size,
                         f"limit_{self.unit}": self.limit})
                if self.held + size > self.limit:
                    raise self._overloaded()
                if size and not charged:
                    self.holders += 1
                self.held += size
                charged += size

        try:
            yield charge
        finally:
            with self._lock:
                self.held -= charged
                if charged:
                    self.holders -= 1

    def refusal(self) -> Overloaded | None:
        """The refusal for any request while the room left is less than both the average
        request held and 1/NEARLY_FULL of the limit, else None. A request that would fit
        in that last sixteenth is refused with the others; one large request in flight
        among few others does not close the budget to small ones that fit."""
        with self._lock:
            room = self.limit - self.held
            if not self.holders or room >= min(self.held / self.holders,
                                               self.limit / NEARLY_FULL):
                return None
            return self._overloaded()

    def _overloaded(self) -> Overloaded:
        return Overloaded(
            f"the service holds {self.held} {self.holding}, its limit is {self.limit} "
            f"({self.setting}): retry shortly",
            {f"held_{self.unit}": self.held, f"limit_{self.unit}": self.limit},
            headers={"Retry-After": str(RETRY_AFTER_S)})


def document_bytes(limit: int) -> Budget:
    return Budget(limit, "bytes", "OCR_MAX_BYTES_IN_FLIGHT", "bytes of documents")


def texts_to_embed(limit: int) -> Budget:
    return Budget(limit, "texts", "EMBED_MAX_TEXTS_IN_FLIGHT", "texts for the Embedding")
