"""Embedding engines by name: the single registry of what can embed text."""

from __future__ import annotations

from deployments.engines.embedding.flag import DenseEncoder, FlagEncoder, M3Encoder, Tokenized

ENGINES: dict[str, type[FlagEncoder]] = {
    engine.name: engine for engine in (DenseEncoder, M3Encoder)}

__all__ = ["ENGINES", "DenseEncoder", "FlagEncoder", "M3Encoder", "Tokenized"]
