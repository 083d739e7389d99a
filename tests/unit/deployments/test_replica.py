"""A model replica follows the placement the ResidencyController answers."""

from __future__ import annotations

import asyncio

from deployments.replica import PlacementFollower


class Handle:
    """A DeploymentHandle stand-in: .placement.remote(name) awaits an answer or fails."""

    def __init__(self, answer: str | Exception):
        self.answer = answer
        self.placement = self

    def remote(self, deployment: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if isinstance(self.answer, Exception):
            future.set_exception(self.answer)
        else:
            future.set_result(self.answer)
        return future


def test_follower_moves_when_told_and_keeps_its_place_when_the_controller_is_gone() -> None:
    moved: list[str] = []
    handle = Handle("cpu")
    follower = PlacementFollower("Embedding", handle, moved.append, "gpu", cache_s=0.0)
    assert asyncio.run(follower.ensure()) == "cpu" and moved == ["cpu"]
    handle.answer = ConnectionError("controller restarting")
    assert asyncio.run(follower.ensure()) == "cpu" and moved == ["cpu"]
    handle.answer = "gpu"
    assert asyncio.run(follower.ensure()) == "gpu" and moved == ["cpu", "gpu"]
    assert follower.moves == 2


def test_follower_trusts_an_answer_for_one_polling_period() -> None:
    moved: list[str] = []
    follower = PlacementFollower("OCR", Handle("cpu"), moved.append, "gpu", cache_s=3600)
    asyncio.run(follower.ensure())
    follower.residency = Handle("gpu")
    assert asyncio.run(follower.ensure()) == "cpu"  # still within the period
