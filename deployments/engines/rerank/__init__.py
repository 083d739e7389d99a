"""Rerank engines by name: the single registry of what can score relevance."""

from __future__ import annotations

from deployments.engines.rerank.base import RerankEngine, RerankJob
from deployments.engines.rerank.cross_encoder import CrossEncoderEngine
from deployments.engines.rerank.similarity import EmbeddingSimilarityEngine

ENGINES: dict[str, type[RerankEngine]] = {
    engine.name: engine for engine in (CrossEncoderEngine, EmbeddingSimilarityEngine)}

__all__ = ["ENGINES", "CrossEncoderEngine", "EmbeddingSimilarityEngine", "RerankEngine",
           "RerankJob"]
