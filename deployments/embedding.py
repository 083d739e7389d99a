"""Embedding deployment: FlagEmbedding models behind @serve.batch, length-sorted forwards.

Models load through FlagEmbedding (FlagModel, BGEM3FlagModel) so their pooling,
heads and normalisation are the real ones, but the forward runs here: encode()
probes the batch size with an extra forward on every call, which would halve
the throughput of micro-batches (see ARCHITECTURE.md, "Embedding speed").
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.models import ModelSpec, resolve_weights
from deployments.replica import ModelReplica
from serve_app.errors import InvalidInput
from serve_app.settings import Settings

DEFAULT_MAX_LENGTH = 512
# Tokens per batch (batch_size_fn) and padded tokens per forward: bound the memory of a
# batch and of its activations whatever the texts' lengths.
MAX_BATCH_TOKENS = 32_768
MAX_BATCH_TEXTS = 256


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    truncated: bool


class FlagEncoder(ABC):
    """Shared tokenising and padding; subclasses run the model's own heads."""

    name = "flag"
    outputs: frozenset[str] = frozenset({"dense"})

    def __init__(self, tokenizer: Any, model: Any, device: str, max_length: int):
        import torch

        self.torch = torch
        self.tokenizer = tokenizer
        self.model = model.to(device).eval()
        self.device = device
        self.max_length = max_length
        self.pad_id = tokenizer.pad_token_id or 0

    def tokenize(self, texts: list[str], max_length: int | None) -> list[Tokenized]:
        limit = min(max_length or self.max_length, self.max_length)
        encoded = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        result = []
        for ids in encoded["input_ids"]:
            if len(ids) > limit:  # keep the closing special token, as truncation=True would
                result.append(Tokenized(ids[: limit - 1] + ids[-1:], True))
            else:
                result.append(Tokenized(ids, False))
        return result

    def pad(self, batch: list[list[int]]) -> tuple[Any, Any]:
        width = max(len(ids) for ids in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return (
            self.torch.from_numpy(ids).to(self.device),
            self.torch.from_numpy(mask).to(self.device),
        )

    def move(self, device: str) -> None:
        self.model.to(device)
        self.device = device

    @abstractmethod
    def forward(self, batch: list[list[int]], want: frozenset[str]) -> list[dict[str, Any]]:
        """One padded forward; per text a dict of the wanted outputs as numpy values."""


class DenseEncoder(FlagEncoder):
    """FlagModel (e.g. all-MiniLM-L6-v2, BGE): dense vectors with the model's pooling."""

    name = "flag-dense"

    def __init__(self, path: str, spec: ModelSpec, device: str):
        from FlagEmbedding import FlagModel

        self.flag = FlagModel(path, pooling_method=spec.pooling, normalize_embeddings=True,
                              use_fp16=False, devices=[device])
        limit = int(spec.options.get("max_length", DEFAULT_MAX_LENGTH))
        super().__init__(self.flag.tokenizer, self.flag.model, device, limit)

    def forward(self, batch: list[list[int]], want: frozenset[str]) -> list[dict[str, Any]]:
        ids, mask = self.pad(batch)
        with self.torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask, return_dict=True)
            pooled = self.flag.pooling(hidden.last_hidden_state, mask)
            dense = self.torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return [{"dense": vector} for vector in dense]


class M3Encoder(FlagEncoder):
    """BGEM3FlagModel: dense, sparse (token weights) and colbert vectors in one forward."""

    name = "bge-m3"
    outputs = frozenset({"dense", "sparse", "colbert"})

    def __init__(self, path: str, spec: ModelSpec, device: str):
        from FlagEmbedding import BGEM3FlagModel

        self.m3 = BGEM3FlagModel(path, use_fp16=False, devices=[device], normalize_embeddings=True)
        limit = int(spec.options.get("max_length", 8192))
        super().__init__(self.m3.tokenizer, self.m3.model, device, limit)
        special = self.tokenizer.all_special_ids
        self.special_ids = frozenset(int(i) for i in special)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one engine per replica, lives forever
    def token_text(self, token_id: int) -> str:
        """The token as text, as FlagEmbedding's convert_id_to_token gives it."""
        return self.tokenizer.decode([token_id]).strip()

    def forward(self, batch: list[list[int]], want: frozenset[str]) -> list[dict[str, Any]]:
        ids, mask = self.pad(batch)
        with self.torch.inference_mode():
            out = self.model(
                {"input_ids": ids, "attention_mask": mask},
                return_dense="dense" in want,
                return_sparse="sparse" in want,
                return_colbert_vecs="colbert" in want,
            )
            arrays = {key: out[f"{key}_vecs"].float().cpu().numpy()
                     for key in ("dense", "sparse", "colbert") if key in want}
        dense, colbert = arrays.get("dense"), arrays.get("colbert")
        sparse = arrays["sparse"].squeeze(-1) if "sparse" in arrays else None
        results: list[dict[str, Any]] = []
        for row, seq in enumerate(batch):
            item: dict[str, Any] = {}
            if dense is not None:
                item["dense"] = dense[row]
            if sparse is not None:
                item["sparse"] = self._token_weights(seq, sparse[row])
            if colbert is not None:
                item["colbert"] = colbert[row, : len(seq) - 1]  # no vector for the CLS token
            results.append(item)
        return results

    def _token_weights(self, seq: list[int], weights: np.ndarray) -> dict[str, float]:
        result: dict[str, float] = {}
        for token_id, weight in zip(seq, weights[: len(seq)].tolist(), strict=True):
            if token_id in self.special_ids or weight <= 0:
                continue
            token = self.token_text(token_id)
            if token and weight > result.get(token, 0.0):  # a bare word-start mark says nothing
                result[token] = weight
        return result


ENGINES: dict[str, type[FlagEncoder]] = {"flag-dense": DenseEncoder, "bge-m3": M3Encoder}


@dataclass(frozen=True)
class EmbedJob:
    """Consecutive texts of one request, tokenized: at most MAX_JOB_TOKENS tokens (a text
    alone has no more: replicas refuse a model whose max_length is larger)."""

    tokens: tuple[Tokenized, ...]
    want: frozenset[str]

    @property
    def size(self) -> int:
        return sum(len(t.ids) for t in self.tokens)


# A request is queued as jobs of this many tokens, so a batch can be filled close to
# MAX_BATCH_TOKENS by many requests and one request of long texts spans several batches.
MAX_JOB_TOKENS = 8192
# Requests with at most this many characters are tokenized without leaving the event loop.
INLINE_TOKENIZE_CHARS = 65_536


def split_into_jobs(tokens: list[Tokenized], want: frozenset[str],
                    budget: int = MAX_JOB_TOKENS) -> list[EmbedJob]:
    """The request's texts in order, cut into jobs of at most `budget` tokens."""
    jobs: list[EmbedJob] = []
    current: list[Tokenized] = []
    size = 0
    for item in tokens:
        if current and size + len(item.ids) > budget:
            jobs.append(EmbedJob(tuple(current), want))
            current, size = [], 0
        current.append(item)
        size += len(item.ids)
    if current:
        jobs.append(EmbedJob(tuple(current), want))
    return jobs


def batch_tokens(jobs: list[EmbedJob]) -> int:
    """@serve.batch's batch_size_fn: a batch is as big as its tokens, not its requests."""
    return sum(job.size for job in jobs)


@serve.deployment(name="Embedding", max_ongoing_requests=64, health_check_period_s=10)
class Embedding(ModelReplica):
    """Dynamic batching across requests, bounded in tokens; one length-sorted forward per
    padded-token budget."""

    deployment_name = "Embedding"

    def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None):
        weights = str(resolve_weights(spec, settings))
        self.start(spec, settings, residency,
                   lambda device: ENGINES[spec.engine](weights, spec, device))
        if self.engine.max_length > MAX_JOB_TOKENS:
            raise ValueError(f"model {spec.name!r}: max_length {self.engine.max_length} is "
                             f"over the {MAX_JOB_TOKENS} tokens a batch job may hold")

    async def embed(
        self, texts: list[str], want: list[str], max_length: int | None = None
    ) -> list[dict[str, Any]]:
        """Per text: the asked outputs, its token count and whether it was truncated."""
        missing = set(want) - self.engine.outputs
        if missing:
            raise InvalidInput(
                f"model {self.spec.name!r} gives {sorted(self.engine.outputs)} only, not "
                f"{sorted(missing)}: deploy bge-m3 for sparse and colbert outputs",
                detail={"model": self.spec.name},
            )
        # Small requests tokenize on the event loop: a thread hop per request cost a quarter
        # of the throughput (bench/embed_throughput.py). Large ones must not stall it.
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            tokens = self.engine.tokenize(texts, max_length)
        else:
            tokens = await asyncio.to_thread(self.engine.tokenize, texts, max_length)
        parts = await asyncio.gather(*(
            self._embed_batch(job) for job in split_into_jobs(tokens, frozenset(want))))
        return [item for part in parts for item in part]

    # max_batch_size counts tokens (batch_size_fn); Ray's start-up warning that it exceeds
    # max_ongoing_requests compares tokens with requests and does not apply.
    @serve.batch(max_batch_size=MAX_BATCH_TOKENS, batch_size_fn=batch_tokens,
                 batch_wait_timeout_s=0.003)
    async def _embed_batch(self, jobs: list[EmbedJob]) -> list[list[dict[str, Any]]]:
        await self.follower.ensure()
        return await asyncio.to_thread(self._run, jobs)

    def _run(self, jobs: list[EmbedJob]) -> list[list[dict[str, Any]]]:
        want = frozenset().union(*(job.want for job in jobs))
        items = [(job_index, text_index, tokens)
                 for job_index, job in enumerate(jobs)
                 for text_index, tokens in enumerate(job.tokens)]
        items.sort(key=lambda item: -len(item[2].ids))
        results: list[list[dict[str, Any]]] = [[{} for _ in job.tokens] for job in jobs]
        start = 0
        while start < len(items):
            longest = len(items[start][2].ids)
            size = max(1, min(MAX_BATCH_TEXTS, MAX_BATCH_TOKENS // longest))
            chunk = items[start : start + size]
            outputs = self.engine.forward([tokens.ids for _, _, tokens in chunk], want)
            for (job_index, text_index, tokens), output in zip(chunk, outputs, strict=True):
                job_want = jobs[job_index].want
                item = {key: value for key, value in output.items() if key in job_want}
                item.update(tokens=len(tokens.ids), truncated=tokens.truncated)
                results[job_index][text_index] = item
            start += size
        return results
