"""Rerank deployment: relevance of documents to a query, batched across requests.

Two engines: a cross-encoder loaded through FlagReranker (bge-reranker-v2-m3 in
production), and, where no cross-encoder is installed, cosine similarity of the
Embedding deployment's dense vectors; the response names the method used.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.models import ModelSpec, resolve_weights
from deployments.replica import ModelReplica
from serve_app.settings import Settings

MAX_PAIRS_PER_FORWARD = 64


@dataclass(frozen=True)
class RerankJob:
    query: str
    documents: list[str]
    max_length: int


class RerankEngine(Protocol):
    method: str

    async def score(self, jobs: list[RerankJob]) -> list[list[float]]: ...

    def move(self, device: str) -> None: ...


class CrossEncoderEngine:
    """FlagReranker's model and tokenizer; sigmoid of the relevance logit, in [0, 1]."""

    method = "cross-encoder"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str, embedding: Any):
        import torch
        from FlagEmbedding import FlagReranker

        self.torch = torch
        weights = resolve_weights(spec, settings)
        reranker = FlagReranker(str(weights), use_fp16=False, devices=[device])
        self.tokenizer = reranker.tokenizer
        self.model = reranker.model.to(device).eval()
        self.device = device

    def move(self, device: str) -> None:
        self.model.to(device)
        self.device = device

    async def score(self, jobs: list[RerankJob]) -> list[list[float]]:
        return await asyncio.to_thread(self._score, jobs)

    def _score(self, jobs: list[RerankJob]) -> list[list[float]]:
        pairs = [(job.query, doc, job.max_length) for job in jobs for doc in job.documents]
        scores: list[float] = []
        for start in range(0, len(pairs), MAX_PAIRS_PER_FORWARD):
            chunk = pairs[start : start + MAX_PAIRS_PER_FORWARD]
            inputs = self.tokenizer(
                [q for q, _, _ in chunk], [d for _, d, _ in chunk], padding=True,
                truncation="only_second", max_length=max(m for _, _, m in chunk),
                return_tensors="pt",
            ).to(self.device)
            with self.torch.inference_mode():
                logits = self.model(**inputs, return_dict=True).logits.view(-1).float()
            scores.extend(self.torch.sigmoid(logits).cpu().tolist())
        return _split(scores, jobs)


class EmbeddingSimilarityEngine:
    """Cosine similarity of normalised dense embeddings, mapped from [-1, 1] to [0, 1]."""

    method = "embedding-similarity"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str, embedding: Any):
        if embedding is None:
            raise ValueError("embedding-similarity rerank needs the Embedding deployment")
        self.embedding: DeploymentHandle = embedding

    def move(self, device: str) -> None:
        """No weights here; the Embedding deployment follows its own placement."""

    async def score(self, jobs: list[RerankJob]) -> list[list[float]]:
        texts = [text for job in jobs for text in (job.query, *job.documents)]
        max_length = max(job.max_length for job in jobs)
        vectors = await self.embedding.embed.remote(texts, ["dense"], max_length)
        dense = np.stack([v["dense"] for v in vectors])
        results, offset = [], 0
        for job in jobs:
            query, docs = dense[offset], dense[offset + 1 : offset + 1 + len(job.documents)]
            results.append(((docs @ query + 1.0) / 2.0).clip(0.0, 1.0).tolist())
            offset += 1 + len(job.documents)
        return results


def _split(scores: list[float], jobs: list[RerankJob]) -> list[list[float]]:
    out, offset = [], 0
    for job in jobs:
        out.append(scores[offset : offset + len(job.documents)])
        offset += len(job.documents)
    return out


ENGINES: dict[str, type[RerankEngine]] = {
    "flag-reranker": CrossEncoderEngine,
    "embedding-similarity": EmbeddingSimilarityEngine,
}


@serve.deployment(name="Rerank", max_ongoing_requests=64, health_check_period_s=10)
class Rerank(ModelReplica):
    """Scores (query, document) pairs; requests arriving together share forwards."""

    deployment_name = "Rerank"

    def __init__(self, spec: ModelSpec, settings: Settings, embedding: DeploymentHandle | None,
                 residency: DeploymentHandle | None = None):
        self.start(spec, settings, residency,
                   lambda device: ENGINES[spec.engine](spec, settings, device, embedding))

    async def rerank(self, query: str, documents: list[str], max_length: int = 512
                     ) -> dict[str, Any]:
        scores = await self._rerank_batch(RerankJob(query, documents, max_length))
        return {"model": self.spec.name, "method": self.engine.method, "scores": scores}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.003)
    async def _rerank_batch(self, jobs: list[RerankJob]) -> list[list[float]]:
        await self.follower.ensure()
        return await self.engine.score(jobs)
