"""Rerank engines by name: the single registry of what a Rerank replica can run.

The embedding-similarity rerank is not here: it holds no model, and the Ingress runs it
through the Embedding deployment (serve_app/similarity.py, ADR 015)."""

from __future__ import annotations

from deployments.engines.rerank.base import RerankEngine, RerankJob
from deployments.engines.rerank.cross_encoder import CrossEncoderEngine

ENGINES: dict[str, type[RerankEngine]] = {
    engine.name: engine for engine in (CrossEncoderEngine,)}

__all__ = ["ENGINES", "CrossEncoderEngine", "RerankEngine", "RerankJob"]
