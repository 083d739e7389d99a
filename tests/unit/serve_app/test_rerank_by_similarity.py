"""The embedding-similarity rerank in the Ingress (ADR 015): one call to the Embedding
with the query and the documents, charged to the same texts budget as an embedding
request, scored by cosine similarity in the documents' order."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from serve_app.budget import texts_to_embed
from serve_app.ingress import RERANK_MAX_LENGTH, Ingress
from serve_app.kernel.errors import Overloaded, PayloadTooLarge
from serve_app.kernel.settings import Settings
from serve_app.pipeline import Handles
from serve_app.similarity import similarity_scores
from tests.unit.serve_app.test_embed_budget import HeldEmbedding


class VectorEmbedding(HeldEmbedding):
    """An Embedding handle that answers each text with its vector from `vectors` (unknown
    texts point nowhere in particular) and records what it was asked."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        super().__init__()
        self.gate.set()
        self.vectors = vectors
        self.asked: list[tuple[list[str], list[str], int | None]] = []

    def remote(self, texts: list[str], want: list[str], max_length: int | None) -> Any:
        self.asked.append((list(texts), list(want), max_length))
        self.calls += 1

        async def answer() -> list[dict[str, Any]]:
            return [{"dense": np.asarray(self.vectors.get(t, [0.3, 0.3, 0.9]), np.float32),
                     "tokens": 1, "truncated": False} for t in texts]

        return asyncio.ensure_future(answer())


class Front(SimpleNamespace):
    """The Ingress's state its rerank uses, with the Ingress's own methods."""

    _rerank = Ingress.func_or_class._rerank
    _embed = Ingress.func_or_class._embed
    _call = Ingress.func_or_class._call
    door_gates = Ingress.func_or_class.door_gates


def front(embedding: HeldEmbedding, similarity: str | None = "embedding-similarity",
          max_texts_in_flight: int = 100) -> Any:
    return Front(settings=Settings(OCR_SIDECAR_API_KEY="k"),
                 handles=Handles(embedding=embedding),  # type: ignore[arg-type]
                 texts_in_flight=texts_to_embed(max_texts_in_flight),
                 similarity_rerank=similarity)


def test_scores_are_the_cosine_mapped_to_zero_one_in_the_documents_order() -> None:
    scores = similarity_scores([2.0, 0.0], [[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])
    assert scores == pytest.approx([1.0, 0.5, 0.0, (1 + 2 ** -0.5) / 2])
    assert similarity_scores([1.0, 0.0], []) == []


def test_the_ingress_embeds_query_and_documents_in_one_call_and_ranks_them(
        clean_env: pytest.MonkeyPatch) -> None:
    embedding = VectorEmbedding({"Hund": [1, 0, 0], "Der Hund bellt": [0.9, 0.1, 0],
                                 "Hamburg": [0, 1, 0], "Katze": [0.5, 0.5, 0.1]})
    rerank = front(embedding)
    answer = asyncio.run(rerank._rerank("Hund", ["Hamburg", "Der Hund bellt", "Katze"], 64))
    assert embedding.asked == [(["Hund", "Hamburg", "Der Hund bellt", "Katze"], ["dense"], 64)]
    assert answer["model"] == "embedding-similarity"
    assert answer["method"] == "embedding-similarity"
    hamburg, bellt, katze = answer["scores"]
    assert bellt > katze > hamburg
    assert rerank.texts_in_flight.held == 0  # given back


def test_a_rerank_is_charged_to_the_embeddings_texts_budget(
        clean_env: pytest.MonkeyPatch) -> None:
    """While embedding requests hold the budget, a rerank is refused before the Embedding
    sees it; one that alone needs more than the whole budget is a 413, not a retry."""

    async def scenario() -> None:
        embedding = HeldEmbedding()
        rerank = front(embedding, max_texts_in_flight=100)
        held = asyncio.create_task(rerank._embed(["a"] * 95, ["dense"], None))
        while embedding.calls < 1:
            await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await rerank._rerank("Hund", ["x"] * 5, RERANK_MAX_LENGTH)  # 6 texts, 5 left
        with pytest.raises(PayloadTooLarge) as too_large:
            await rerank._rerank("Hund", ["x"] * 100, RERANK_MAX_LENGTH)  # 101 > 100
        assert too_large.value.detail == {"needed_texts": 101, "limit_texts": 100}
        assert embedding.calls == 1  # neither reached the Embedding
        embedding.gate.set()
        await held

    asyncio.run(scenario())


def test_the_front_door_gates_the_rerank_routes_only_when_they_embed(
        clean_env: pytest.MonkeyPatch) -> None:
    by_similarity = front(HeldEmbedding()).door_gates()
    assert set(by_similarity) == {"/v1/embed", "/v1/embeddings", "/v1/rerank", "/v2/rerank"}
    by_cross_encoder = front(HeldEmbedding(), similarity=None).door_gates()
    assert set(by_cross_encoder) == {"/v1/embed", "/v1/embeddings"}
