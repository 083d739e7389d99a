"""Rerank without a cross-encoder: cosine similarity of the Embedding deployment's vectors.

No cross-encoder ships offline, so the embedded default ranks this way; the response
says `"method": "embedding-similarity"`."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.engines.rerank.base import RerankJob
from deployments.models import ModelSpec
from serve_app.kernel.settings import Settings

EMBEDDING_DEPLOYMENT = "Embedding"


class EmbeddingSimilarityEngine:
    """Cosine similarity of normalised dense embeddings, mapped from [-1, 1] to [0, 1].

    It calls the Embedding deployment of its own application (the builder refuses an
    application that has none), found by name through Serve."""

    name: ClassVar[str] = "embedding-similarity"
    method: ClassVar[str] = "embedding-similarity"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self._embedding: DeploymentHandle | None = None

    @property
    def embedding(self) -> DeploymentHandle:
        if self._embedding is None:
            app = serve.get_replica_context().app_name
            self._embedding = serve.get_deployment_handle(EMBEDDING_DEPLOYMENT, app)
        return self._embedding

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
