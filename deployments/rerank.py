"""Rerank deployment: relevance of documents to a query, batched across requests.

The engine (deployments/engines/rerank) is a cross-encoder loaded through FlagReranker;
the response names the method used. Where no cross-encoder is installed, the Ingress
ranks by embedding similarity itself and this deployment is not part of the
application (ADR 015).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.batching import WhenFreeBatcher
from deployments.engines.rerank import ENGINES, RerankJob
from deployments.models import ModelSpec
from deployments.replica import ModelReplica
from serve_app.kernel.settings import Settings


# Bounded queue, sized like the Embedding deployment's (a model of the same size): beyond
# it, 503 with Retry-After.
@serve.deployment(name="Rerank", max_ongoing_requests=64, max_queued_requests=96,
                  health_check_period_s=10)
class Rerank(ModelReplica):
    """Scores (query, document) pairs; requests queued together share forwards."""

    deployment_name = "Rerank"

    async def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None):
        self.start(spec, settings, residency,
                   lambda device: ENGINES[spec.engine](spec, settings, device))
        self.batcher = WhenFreeBatcher(self._rerank_batch, max_size=16)
        self.follow_placement()

    async def rerank(self, query: str, documents: list[str], max_length: int = 512
                     ) -> dict[str, Any]:
        scores = await self.batcher(RerankJob(query, documents, max_length))
        return {"model": self.spec.name, "method": self.engine.method, "scores": scores}

    async def _rerank_batch(self, jobs: list[RerankJob]) -> list[list[float]]:
        return await self.follower.run(lambda: self.engine.score(jobs))
