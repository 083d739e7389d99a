"""The queue in front of the Embedding is bounded by its work: texts in flight, counted in
the ingress, refused at once beyond EMBED_MAX_TEXTS_IN_FLIGHT and given back after."""

from __future__ import annotations

import asyncio
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


def test_the_budget_closes_its_routes_while_a_request_of_the_average_size_would_not_fit(
) -> None:
    budget = texts_to_embed(100)
    assert budget.refusal() is None  # nothing held
    with budget.hold() as first, budget.hold() as second:
        first(30)
        second(10)  # 40 held by 2: an average request (20) fits in the 60 left
        assert budget.refusal() is None
        with budget.hold() as third:
            third(50)  # 90 held by 3: an average request (30) does not fit in the 10 left
            refusal = budget.refusal()
            assert isinstance(refusal, Overloaded)
            assert refusal.detail == {"held_texts": 90, "limit_texts": 100}
            assert refusal.headers["Retry-After"] == "2"
        assert budget.refusal() is None  # the third gave its 50 back
    assert (budget.held, budget.holders) == (0, 0)


def test_the_ingress_gates_its_embedding_routes_by_its_texts_in_flight() -> None:
    declared = {getattr(member, "__route__", (None, None))[1]
                for cls in Ingress.func_or_class.__mro__ for member in vars(cls).values()}
    budget = texts_to_embed(100)
    gates = Ingress.func_or_class.door_gates(Front(texts_in_flight=budget))
    assert set(gates) == {"/v1/embed", "/v1/embeddings"} and set(gates) <= declared
    with budget.hold() as charge:
        charge(100)
        assert all(isinstance(gate(), Overloaded) for gate in gates.values())
