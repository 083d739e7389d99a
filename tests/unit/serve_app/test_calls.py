"""A handle call past its deadline is a 504 that cancels the work; a deployment that
cannot take a call is a 503 with Retry-After."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest
from ray.serve.exceptions import BackPressureError

from serve_app.calls import answer
from serve_app.kernel.errors import Overloaded, UpstreamTimeout


class Response:
    """Awaitable like a DeploymentResponse: it never answers, or raises `error`."""

    def __init__(self, error: BaseException | None = None):
        self.error = error
        self.cancelled = False

    def __await__(self) -> Generator[Any, None, Any]:
        if self.error is not None:
            raise self.error
        yield from asyncio.Event().wait().__await__()  # a replica that hangs

    def cancel(self) -> None:
        self.cancelled = True


def test_a_call_past_its_deadline_is_504_and_cancelled() -> None:
    response = Response()
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.05 s"):
        asyncio.run(answer(response, 0.05, "the OCR deployment"))  # type: ignore[arg-type]
    assert response.cancelled


def test_a_full_queue_is_503_with_retry_after() -> None:
    with pytest.raises(Overloaded) as caught:
        asyncio.run(answer(Response(BackPressureError(num_queued_requests=5,  # type: ignore[arg-type]
                                                      max_queued_requests=5)),
                           10, "the Embedding deployment"))
    assert caught.value.status == 503 and caught.value.headers == {"Retry-After": "2"}
