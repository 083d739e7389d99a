"""A cross-encoder through FlagReranker (bge-reranker-v2-m3 in production)."""

from __future__ import annotations

from typing import ClassVar

from deployments.engines.rerank.base import RerankJob, split_scores
from deployments.model_thread import run_on_model_thread
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
        return await run_on_model_thread(self._score, jobs)

    def _score(self, jobs: list[RerankJob]) -> list[list[float]]:
        """Every job's pairs tokenized unpadded, run longest first in forwards of at most
        MAX_PAIRS_PER_FORWARD pairs padded to their own longest (as FlagReranker's own
        compute_score does): unsorted chunks pad a short document to a long one."""
        pairs = [encoded for job in jobs for encoded in self._encode(job)]
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i]["input_ids"]))
        scores = [0.0] * len(pairs)
        for start in range(0, len(order), MAX_PAIRS_PER_FORWARD):
            chunk = order[start : start + MAX_PAIRS_PER_FORWARD]
            inputs = self.tokenizer.pad([pairs[i] for i in chunk], padding=True,
                                        return_tensors="pt").to(self.device)
            with self.torch.inference_mode():
                logits = self.model(**inputs, return_dict=True).logits.view(-1).float()
            for index, score in zip(chunk, self.torch.sigmoid(logits).cpu().tolist(),
                                    strict=True):
                scores[index] = score
        return split_scores(scores, jobs)

    def _encode(self, job: RerankJob) -> list[dict[str, list[int]]]:
        """(query, document) pairs of one job as token ids, the document truncated."""
        encoded = self.tokenizer([job.query] * len(job.documents), job.documents,
                                 truncation="only_second", max_length=job.max_length)
        return [{key: values[i] for key, values in encoded.items()}
                for i in range(len(job.documents))]
