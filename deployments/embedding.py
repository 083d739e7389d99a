"""Embedding deployment: requests batched across callers by tokens, length-sorted forwards.

A request is tokenized on arrival and queued as jobs of at most MAX_JOB_TOKENS tokens;
when a batch's forwards end, the next batch takes the queued jobs up to MAX_BATCH_TOKENS
tokens (deployments/batching.py); its texts run sorted by length, cut into forwards where
that saves more than another forward's fixed cost (`plan_forwards`), through the engine of
deployments/engines/embedding, which packs a forward's texts into rows without padding
where the model allows.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter

from deployments.batching import WhenFreeBatcher
from deployments.engines.embedding import ENGINES, Tokenized
from deployments.model_thread import run_on_model_thread
from deployments.models import ModelSpec
from deployments.replica import ModelReplica
from serve_app.kernel.errors import InvalidInput
from serve_app.kernel.settings import Settings

# Tokens per batch and padded tokens per forward: bound the memory of a
# batch and of its activations whatever the texts' lengths.
MAX_BATCH_TOKENS = 32_768
MAX_BATCH_TEXTS = 256


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


def plan_forwards(lengths: list[int], overhead: float, padding_cost: float = 1.0,
                  max_texts: int = MAX_BATCH_TEXTS,
                  max_tokens: int = MAX_BATCH_TOKENS) -> list[tuple[int, int]]:
    """Cut texts sorted longest first into forwards of the least cost, as (start, end).

    A forward costs `overhead` (its fixed cost, in tokens), its texts' tokens, and its
    padding (its texts times its longest, less their tokens) at `padding_cost` a token: 1
    for an engine that pads; less for one that packs (engines/embedding/packing.py), which
    computes no padding, but whose forwards of mixed lengths still ran slower than the
    same texts cut by length (FlagEncoder.padding_cost). Fixed-size chunks of a padded
    batch spanning many lengths pad the short texts to the long ones (512 sentences of
    6-14 words in two forwards ran at 0.75 of planned ones). Texts of one length never
    need cutting, so the search runs over the distinct lengths, of which a batch of
    MAX_BATCH_TOKENS tokens has a few hundred at most."""
    runs: list[tuple[int, int, int]] = []  # (length, first index, count), longest first
    for index, length in enumerate(lengths):
        if runs and runs[-1][0] == length:
            runs[-1] = (length, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((length, index, 1))

    def forwards(count: int, longest: int) -> int:
        return math.ceil(count / max(1, min(max_texts, max_tokens // longest)))

    best = [0.0] + [math.inf] * len(runs)  # best[j]: least cost of the first j runs
    first = [0] * (len(runs) + 1)  # the first run of the last group in that plan
    for end in range(1, len(runs) + 1):
        count = tokens = 0
        for start in range(end - 1, -1, -1):
            length, _, run_count = runs[start]
            count += run_count
            tokens += run_count * length
            computed = tokens + padding_cost * (count * length - tokens)
            cost = best[start] + forwards(count, length) * overhead + computed
            if cost < best[end]:
                best[end], first[end] = cost, start
    spans: list[tuple[int, int]] = []
    end = len(runs)
    while end:
        start = first[end]
        lo, hi = runs[start][1], runs[end - 1][1] + runs[end - 1][2]
        size = math.ceil((hi - lo) / forwards(hi - lo, runs[start][0]))
        spans[:0] = [(at, min(at + size, hi)) for at in range(lo, hi, size)]
        end = start
    return spans


# The queue in front is bounded by its work in the ingress (EMBED_MAX_TEXTS_IN_FLIGHT, 5120
# texts, ~18 s on 2 cores: bench/overload.py), not by a count of requests, which are 1 text
# or 1024. So the replica takes what the ingress lets through and its batcher queues it:
# requests waiting in Serve's router are handed over on its retry backoff (up to 0.5 s),
# which left the replica idle between batches (128 clients ran at 0.6 of 32). Serve's
# bound stays as the backstop. It counts a request as queued while a caller's router is
# still handing it to the replica, and when a batch ends, its requests' clients send their
# next ones at once: at 128 clients of 16 texts (2,048, well inside the budget) a queue of
# 64 refused 10-26 requests in two of four runs, 256 none in four. Beyond either bound:
# 503 with Retry-After (serve_app/calls.py).
@serve.deployment(name="Embedding", max_ongoing_requests=256, max_queued_requests=256,
                  health_check_period_s=10)
class Embedding(ModelReplica):
    """Batching across requests, bounded in tokens; length-sorted forwards, planned."""

    deployment_name = "Embedding"

    async def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None):
        self.start(spec, settings, residency,
                   lambda device: ENGINES[spec.engine](spec, settings, device))
        if self.engine.max_length > MAX_JOB_TOKENS:
            raise ValueError(f"model {spec.name!r}: max_length {self.engine.max_length} is "
                             f"over the {MAX_JOB_TOKENS} tokens a batch job may hold")
        self.batcher = WhenFreeBatcher(self._embed_batch, MAX_BATCH_TOKENS,
                                       lambda job: job.size)
        self.texts_embedded = Counter("ocr_graph_embedded_texts", "Texts embedded (its rate: "
                                      "embeddings per second).")
        self.follow_placement()

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
            self.batcher(job) for job in split_into_jobs(tokens, frozenset(want))))
        self.texts_embedded.inc(len(texts))
        return [item for part in parts for item in part]

    async def _embed_batch(self, jobs: list[EmbedJob]) -> list[list[dict[str, Any]]]:
        return await self.follower.run(lambda: run_on_model_thread(self._run, jobs))

    def _run(self, jobs: list[EmbedJob]) -> list[list[dict[str, Any]]]:
        want = frozenset().union(*(job.want for job in jobs))
        items = [(job_index, text_index, tokens)
                 for job_index, job in enumerate(jobs)
                 for text_index, tokens in enumerate(job.tokens)]
        items.sort(key=lambda item: -len(item[2].ids))
        results: list[list[dict[str, Any]]] = [[{} for _ in job.tokens] for job in jobs]
        plan = plan_forwards([len(tokens.ids) for _, _, tokens in items],
                             self.engine.forward_overhead, self.engine.padding_cost)
        for start, end in plan:
            chunk = items[start:end]
            outputs = self.engine.forward([tokens.ids for _, _, tokens in chunk], want)
            for (job_index, text_index, tokens), output in zip(chunk, outputs, strict=True):
                job_want = jobs[job_index].want
                item = {key: value for key, value in output.items() if key in job_want}
                item.update(tokens=len(tokens.ids), truncated=tokens.truncated)
                results[job_index][text_index] = item
        return results
