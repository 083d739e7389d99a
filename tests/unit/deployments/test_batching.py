"""WhenFreeBatcher: what queues while a batch runs goes into the next one, together."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from deployments.batching import WhenFreeBatcher


class Model:
    """A model whose every batch waits until the test lets it finish."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = asyncio.Event()
        self.finish = asyncio.Event()

    async def run(self, jobs: list[str]) -> list[str]:
        self.batches.append(jobs)
        self.started.set()
        await self.finish.wait()
        self.finish.clear()
        if "bad" in jobs:
            raise ValueError("the model refused a batch")
        return [job.upper() for job in jobs]

    async def next_batch(self) -> None:
        """Let the running batch finish and wait until the next one has started."""
        self.started.clear()
        self.finish.set()
        await self.started.wait()


def bounded(scenario: Coroutine[Any, Any, None]) -> None:
    """A batcher that forms batches wrongly leaves a batch waiting: fail, do not hang."""
    asyncio.run(asyncio.wait_for(scenario, 10))


async def settle() -> None:
    """Let every task that can run, run (callers reach the queue)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_requests_that_queue_behind_a_running_batch_go_into_the_next_one_together() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = WhenFreeBatcher(model.run, max_size=100)
        first = asyncio.create_task(batcher("a"))
        await model.started.wait()
        waiting = [asyncio.create_task(batcher(job)) for job in "bcdefgh"]
        await settle()
        await model.next_batch()
        model.finish.set()
        assert await first == "A"
        assert await asyncio.gather(*waiting) == list("BCDEFGH")
        assert model.batches == [["a"], list("bcdefgh")]

    bounded(scenario())


def test_a_batch_stops_at_its_size_budget_and_the_rest_waits_in_order() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = WhenFreeBatcher(model.run, max_size=10, size=len)
        first = asyncio.create_task(batcher("x" * 30))  # alone over the budget: still runs
        await model.started.wait()
        rest = [asyncio.create_task(batcher(job)) for job in ("aaaa", "bbbb", "cccc", "dd")]
        await settle()
        await model.next_batch()
        await model.next_batch()
        model.finish.set()
        await asyncio.gather(first, *rest)
        assert model.batches == [["x" * 30], ["aaaa", "bbbb"], ["cccc", "dd"]]

    bounded(scenario())


def test_a_caller_that_gave_up_is_not_run_and_the_others_are() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = WhenFreeBatcher(model.run, max_size=100)
        first = asyncio.create_task(batcher("a"))
        await model.started.wait()
        gone, kept = asyncio.create_task(batcher("gone")), asyncio.create_task(batcher("kept"))
        await settle()
        gone.cancel()
        await model.next_batch()
        model.finish.set()
        assert await kept == "KEPT"
        await first
        assert model.batches == [["a"], ["kept"]]
        with pytest.raises(asyncio.CancelledError):
            await gone

    bounded(scenario())


def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = WhenFreeBatcher(model.run, max_size=100)
        bad = asyncio.create_task(batcher("bad"))
        await model.started.wait()
        after = asyncio.create_task(batcher("after"))
        await settle()
        await model.next_batch()
        with pytest.raises(ValueError, match="refused"):
            await bad
        model.finish.set()
        assert await after == "AFTER"

    bounded(scenario())
