"""Rerank without a cross-encoder: cosine similarity of the Embedding's dense vectors.

No cross-encoder ships offline, so the embedded default ranks this way. The Ingress does
it itself (ADR 015): it embeds the query and the documents in one call to the Embedding
deployment, charged to the same texts budget as an embedding request, and scores here.
A replica of its own would only relay that call and cost a process and a hop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

# The catalog's engine name for it; the response's "method" says it ran.
SIMILARITY_ENGINE = "embedding-similarity"


def similarity_scores(query: ArrayLike, documents: Sequence[ArrayLike]) -> list[float]:
    """Each document's cosine similarity to the query, mapped from [-1, 1] to [0, 1] so
    scores read like a cross-encoder's. The vectors are normalised here: an engine that
    returns them normalised already loses nothing, and one that does not still ranks by
    angle rather than by length."""
    if not documents:
        return []
    matrix = np.asarray(documents, dtype=np.float32)
    vector = np.asarray(query, dtype=np.float32)
    matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    return ((matrix @ vector + 1.0) / 2.0).clip(0.0, 1.0).tolist()
