"""The queue in front of the Embedding is bounded by its work: texts in flight, counted in
the ingress, refused at once beyond EMBED_MAX_TEXTS_IN_FLIGHT and given back after."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest

from serve_app.budget import texts_to_embed
from serve_app.ingress import Ingress
from serve_app.kernel.errors import Overloaded
from serve_app.kernel.settings import Settings
from serve_app.pipeline import Handles


class HeldEmbedding:
    """An Embedding handle whose answers wait until `gate` opens; it counts its calls."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0
        self.embed = self

    def options(self, **_: Any) -> HeldEmbedding:  # by value or by reference: same here
        return self

    def remote(self, texts: list[str], want: list[str], max_length: int | None) -> Any:
        self.calls += 1

        async def answer() -> list[dict[str, Any]]:
            await self.gate.wait()
            return [{"dense": [0.0], "tokens": 1, "truncated": False} for _ in texts]

        return asyncio.ensure_future(answer())


class Front(SimpleNamespace):
    """The Ingress's state its `_embed` uses, with the Ingress's own methods (a real
    Ingress would need Serve around it)."""

    _embed = Ingress.func_or_class._embed
    _call = Ingress.func_or_class._call


def ingress(settings: Settings, embedding: HeldEmbedding) -> Any:
    return Front(settings=settings, handles=Handles(embedding=embedding),  # type: ignore[arg-type]
                 texts_in_flight=texts_to_embed(settings.max_texts_in_flight))


def test_texts_beyond_the_budget_are_refused_before_the_embedding_sees_them(
        clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(OCR_SIDECAR_API_KEY="k", EMBED_MAX_TEXTS=100,
                        EMBED_MAX_TEXTS_IN_FLIGHT=150)

    async def scenario() -> None:
        embedding = HeldEmbedding()
        front = ingress(settings, embedding)
        first = asyncio.create_task(front._embed(["a"] * 100, ["dense"], None))
        while embedding.calls < 1:  # the first request is with the Embedding
            await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await front._embed(["b"] * 51, ["dense"], None)
        assert refused.value.detail == {"held_texts": 100, "limit_texts": 150}
        assert refused.value.headers["Retry-After"] == "2"
        assert embedding.calls == 1  # refused before it was sent
        embedding.gate.set()
        assert len(await first) == 100
        assert front.texts_in_flight.held == 0  # given back
        assert len(await front._embed(["c"] * 150, ["dense"], None)) == 150

    asyncio.run(scenario())


def test_a_budget_below_the_largest_request_refuses_to_start(
        clean_env: pytest.MonkeyPatch) -> None:
    from serve_app.kernel.settings import ConfigError

    with pytest.raises(ConfigError, match="EMBED_MAX_TEXTS_IN_FLIGHT"):
        Settings.load({"OCR_SIDECAR_API_KEY": "k", "EMBED_MAX_TEXTS": 6000})


def test_the_budget_closes_its_routes_only_when_nearly_full_for_requests_like_its_own(
) -> None:
    budget = texts_to_embed(160)  # its last sixteenth: 10 texts
    assert budget.refusal() is None  # nothing held
    with budget.hold() as big:
        big(150)  # one request of 150: the 10 left are open to smaller ones
        assert budget.refusal() is None
    with budget.hold() as first, budget.hold() as second:
        first(40)
        second(20)  # 60 held by 2: room 100
        assert budget.refusal() is None
        with budget.hold() as third:
            third(91)  # 151 held by 3: room 9, under the average (50) and a sixteenth
            refusal = budget.refusal()
            assert isinstance(refusal, Overloaded)
            assert refusal.detail == {"held_texts": 151, "limit_texts": 160}
            assert refusal.headers["Retry-After"] == "2"
        assert budget.refusal() is None  # the third gave its 91 back
    with contextlib.ExitStack() as stack:
        for _ in range(76):
            stack.enter_context(budget.hold())(2)  # 152 held: room 8, four average ones
        assert budget.refusal() is None
    assert (budget.held, budget.holders) == (0, 0)


def test_the_ingress_gates_its_embedding_routes_by_its_texts_in_flight() -> None:
    declared = {getattr(member, "__route__", (None, None))[1]
                for cls in Ingress.func_or_class.__mro__ for member in vars(cls).values()}
    budget = texts_to_embed(100)
    gates = Ingress.func_or_class.door_gates(Front(texts_in_flight=budget,
                                                   similarity_rerank=None))
    assert set(gates) == {"/v1/embed", "/v1/embeddings"} and set(gates) <= declared
    with budget.hold() as charge:
        charge(100)
        assert all(isinstance(gate(), Overloaded) for gate in gates.values())


def test_a_request_larger_than_the_whole_budget_is_413_not_a_retry() -> None:
    """However long the client waits, 101 texts never fit a budget of 100: a 503 with
    Retry-After would have it retry forever."""
    from serve_app.kernel.errors import PayloadTooLarge

    budget = texts_to_embed(100)
    with budget.hold() as charge:
        charge(60)
        with pytest.raises(PayloadTooLarge, match="EMBED_MAX_TEXTS_IN_FLIGHT=100") as refused:
            charge(41)  # this request's 101 in all
        assert refused.value.detail == {"needed_texts": 101, "limit_texts": 100}
    assert (budget.held, budget.holders) == (0, 0)
