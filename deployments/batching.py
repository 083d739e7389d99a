"""Batches that form when the model is free: whatever queued while one forward ran goes
into the next, up to a size budget (continuous batching, as text-embeddings-inference and
infinity do it).

Serve's @serve.batch forms a batch as soon as its first item has waited
`batch_wait_timeout_s`, then queues the batch for the model. While the model is busy, that
cuts the waiting requests into many small batches queued behind it: at 32 clients the
Embedding ran batches of 2 requests while 30 more waited in the replica, and short batches
of mixed lengths pad more and pay a forward's fixed cost per few texts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


class WhenFreeBatcher(Generic[Job, Result]):
    """`await batcher(job)` gives `run`'s result for that job. One batch runs at a time;
    the next takes the queue in order until `size` would pass `max_size` (at least one
    job, whatever its size). A caller that gave up (cancelled) is skipped if its job has
    not started, and ignored if it has."""

    def __init__(self, run: Callable[[list[Job]], Awaitable[list[Result]]], max_size: int,
                 size: Callable[[Job], int] = lambda job: 1) -> None:
        self._run, self._max_size, self._size = run, max_size, size
        self._queue: deque[tuple[Job, asyncio.Future[Result]]] = deque()
        self._ready = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, job: Job) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((job, future))
        self._ready.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[tuple[Job, asyncio.Future[Result]]]:
        batch: list[tuple[Job, asyncio.Future[Result]]] = []
        total = 0
        while self._queue:
            job, future = self._queue[0]
            if future.done():  # its caller gave up before it started
                self._queue.popleft()
                continue
            size = self._size(job)
            if batch and total + size > self._max_size:
                break
            batch.append(self._queue.popleft())
            total += size
        if not self._queue:
            self._ready.clear()
        return batch

    async def _drain(self) -> None:
        while True:
            await self._ready.wait()
            batch = self._next_batch()
            if not batch:
                continue
            try:
                results = await self._run([job for job, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
            except asyncio.CancelledError:  # the replica is shutting down
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as error:  # every caller of the batch hears it; the next runs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
