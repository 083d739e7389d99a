"""A cross-encoder through FlagReranker (bge-reranker-v2-m3 in production)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from deployments.engines.rerank.base import RerankJob, split_scores
from deployments.models import ModelSpec, resolve_weights
from serve_app.kernel.settings import Settings

MAX_PAIRS_PER_FORWARD = 64


class CrossEncoderEngine:
    """FlagReranker's model and tokenizer; sigmoid of the relevance logit, in [0, 1]."""

    name: ClassVar[str] = "flag-reranker"
    method: ClassVar[str] = "cross-encoder"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
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
        return split_scores(scores, jobs)
