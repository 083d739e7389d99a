"""The bytes of documents an ingress replica holds at once.

Request counts alone do not bound memory: 256 uploads of 100 MB each are 25 GB. Every
document's bytes are charged here as they arrive (chunk by chunk for uploads and URLs,
by size before reading for files under the upload base) and released when its request
ends; a charge past OCR_MAX_BYTES_IN_FLIGHT is a 503 with Retry-After, before the bytes
are read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from serve_app.calls import RETRY_AFTER_S
from serve_app.kernel.errors import Overloaded

Charge = Callable[[int], None]


class ByteBudget:
    """A shared allowance of document bytes; charged from the event loop and from the
    threads that read files, hence the lock."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[Charge]:
        """A charge function for one request's document; what it charged is given back
        when the block ends, however it ends."""
        charged = 0

        def charge(size: int) -> None:
            nonlocal charged
            with self._lock:
                if self.held + size > self.limit:
                    raise Overloaded(
                        f"the service holds {self.held} bytes of documents, its limit is "
                        f"{self.limit} (OCR_MAX_BYTES_IN_FLIGHT): retry shortly",
                        {"held_bytes": self.held, "limit_bytes": self.limit},
                        headers={"Retry-After": str(RETRY_AFTER_S)})
                self.held += size
                charged += size

        try:
            yield charge
        finally:
            with self._lock:
                self.held -= charged
