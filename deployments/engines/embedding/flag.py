"""FlagEmbedding models with our own forward: dense (FlagModel) and BGE-M3 (dense,
sparse, colbert).

Models load through FlagEmbedding, so their pooling, heads and normalisation are the
real ones, but the forward runs here: `encode()` first runs a batch-size probe forward
on its longest inputs on every call, so a micro-batch through it costs two forwards
(measured on 2 cores with all-MiniLM-L6-v2: 187-209 sentences/s through encode per 64
sentences, against 553 for the model's own forward; docs/architecture.md). The encoder
runs packed where the architecture allows (packing.py): no token of a forward is padding.
On the CPU a dense model runs from its ONNX export and the tokenizer its first start
wrote, pooled as FlagModel pools, without torch (exported.py): later starts load only
those, and the first start, once it has exported, drops the model it loaded.
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from deployments.engines.embedding.exported import POOLINGS, ExportedEncoder
from deployments.models import ModelSpec, resolve_weights
from serve_app.kernel.settings import Settings

DEFAULT_MAX_LENGTH = 512
DENSE = frozenset({"dense"})
# What a padded token costs a packed forward in Embedding's plan, relative to a real one.
# Packing computes no padding, yet one forward of mixed lengths ran slower than the same
# texts cut into forwards of like lengths (2 cores, MiniLM, 2,048 sentences: 422-453
# sentences/s cut only at 256 texts, 490-521 planned at 0.25, 495-527 at 1), while at
# 0.25 a request's 16 sentences stay one forward as at 0 (339-398 sentences/s; cut as a
# padded plan cuts them: 290-346).
PACKED_PADDING_COST = 0.25


def on_onnx_runtime(settings: Settings, device: str) -> bool:
    """A model built on the CPU stays there: a replica builds it on cuda wherever it can
    use a GPU, and moves it only between a GPU and the CPU (replica.py). So its encoder can
    run on ONNX Runtime, faster on the CPU (onnx_encoder.py). Decided without importing
    torch, which a dense model's start from its export does not."""
    return device == "cpu" and settings.embed_cpu_runtime == "onnxruntime"


def _model_tokenizer_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's ids with the model's special tokens, untruncated: its own tokenizer."""
    return list(tokenizer(texts, add_special_tokens=True, truncation=False,
                          verbose=False)["input_ids"])


def _backend_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """The same ids from that tokenizer's Rust backend, as an export saved it (truncation
    and padding off, as the model's own tokenizer is called here)."""
    return [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=True)]


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    truncated: bool


class FlagEncoder(ABC):
    """Shared tokenising and padding; subclasses run the model's own heads."""

    name: ClassVar[str] = "flag"
    outputs: frozenset[str] = frozenset({"dense"})
    token_ids: Callable[[list[str]], list[list[int]]]  # per text, untruncated

    @abstractmethod
    def __init__(self, spec: ModelSpec, settings: Settings, device: str) -> None:
        """Load the model through FlagEmbedding, then `_use` its tokenizer and network."""

    def _use(self, tokenizer: Any, model: Any, device: str, spec: ModelSpec,
             settings: Settings) -> None:
        """The model's tokenizer and network, its encoder on ONNX Runtime where it runs
        packed on the CPU (`_ready` follows)."""
        import torch

        from deployments.engines.embedding.packing import PackedEncoder

        self.torch = torch
        self.tokenizer = tokenizer
        self.model = model.to(device).eval()
        # Whether the model's encoder runs packed (packing.py): its forwards compute no
        # padding, which the plan weighs at PACKED_PADDING_COST.
        packed = [part for part in self.model.modules() if isinstance(part, PackedEncoder)]
        self.packs = bool(packed)
        self.runtime = "torch"
        if packed and on_onnx_runtime(settings, device):
            self._run_on_onnx(packed[0], spec, settings)
        self.token_ids = functools.partial(_model_tokenizer_ids, tokenizer)

    def _ready(self, device: str, max_length: int, pad_id: int) -> None:
        self.padding_cost = PACKED_PADDING_COST if self.packs else 1.0
        self.device = device
        self.max_length = max_length
        self.pad_id = pad_id
        self.forward_overhead = self.measure_forward_overhead()

    def tokenize(self, texts: list[str], max_length: int | None) -> list[Tokenized]:
        limit = min(max_length or self.max_length, self.max_length)
        result = []
        for ids in self.token_ids(texts):
            if len(ids) > limit:  # keep the closing special token, as truncation=True would
                result.append(Tokenized(ids[: limit - 1] + ids[-1:], True))
            else:
                result.append(Tokenized(ids, False))
        return result

    def _run_on_onnx(self, packed: Any, spec: ModelSpec, settings: Settings) -> None:
        from deployments.engines.embedding.onnx_encoder import onnx_encoder

        assert settings.model_cache_dir is not None and settings.tmp_dir is not None
        weights = resolve_weights(spec, settings)
        if weights is None:
            return
        encoder = onnx_encoder(packed.encoder, packed.first_position, self.tokenizer,
                               spec.name, weights, settings.model_cache_dir, settings.tmp_dir)
        if encoder is not None:
            packed.encoder.to("meta")  # its weights now live in the session: no second copy
            packed.encoder = encoder
            self._on_onnx()

    def _on_onnx(self) -> None:
        self.runtime = "onnxruntime"
        # What stays on torch (packing's gathers, pooling, heads) is small; a team of
        # torch threads beside the session's own would take turns with it on the cores
        # (16 sentences a forward: 202-374 sentences/s, against 353-452 on one thread; ADR 013).
        self.torch.set_num_threads(1)

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
        self.forward_overhead = self.measure_forward_overhead()

    def measure_forward_overhead(self) -> float:
        """A forward's fixed cost on this device, in tokens: what cutting a batch into one
        more forward must save to pay (Embedding's plan). About 40-60 for
        MiniLM on 2 CPU cores; on a GPU, where tokens are cheap and launches are not, far
        more. The first forward is a warm-up, which also spares the first request the
        kernels' set-up."""
        small, large = [[self.pad_id] * 16], [[self.pad_id] * 32] * 8

        def seconds(batch: list[list[int]]) -> float:
            best = float("inf")
            for _ in range(3):  # the fastest of three: a busy machine only adds time
                started = time.perf_counter()
                self.forward(batch, DENSE)
                best = min(best, time.perf_counter() - started)
            return best

        self.forward(large, DENSE)
        large_s, small_s = seconds(large), seconds(small)
        per_token = max((large_s - small_s) / (8 * 32 - 16), 1e-9)
        return max(1.0, small_s / per_token - 16)

    @abstractmethod
    def forward(self, batch: list[list[int]], want: frozenset[str]) -> list[dict[str, Any]]:
        """One forward (packed where the engine packs); per text a dict of the wanted
        outputs as numpy values."""


class DenseEncoder(FlagEncoder):
    """FlagModel (e.g. all-MiniLM-L6-v2, BGE): dense vectors with the model's pooling; on
    the CPU from its ONNX export, without torch (exported.py)."""

    name: ClassVar[str] = "flag-dense"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        limit = int(spec.options.get("max_length", DEFAULT_MAX_LENGTH))
        weights = resolve_weights(spec, settings)
        self.exported: ExportedEncoder | None = None
        exportable = (weights is not None and spec.pooling in POOLINGS
                      and on_onnx_runtime(settings, device))
        if exportable and self._from_export(spec, weights, settings, limit):
            return
        from FlagEmbedding import FlagModel

        from deployments.engines.embedding.packing import packed

        flag = FlagModel(str(weights), pooling_method=spec.pooling,
                         normalize_embeddings=True, use_fp16=False, devices=[device])
        self._use(flag.tokenizer, packed(flag.model), device, spec, settings)  # exports
        if (exportable and self.runtime == "onnxruntime"
                and self._from_export(spec, weights, settings, limit)):
            return  # the export just written, as every later start runs it
        self.flag, self.pooling = flag, flag.pooling
        self._ready(device, limit, flag.tokenizer.pad_token_id or 0)

    def _from_export(self, spec: ModelSpec, weights: Path | None, settings: Settings,
                     limit: int) -> bool:
        """Built from the export and tokenizer on disk, where there is one whole: the
        model's own code, torch among it, is not imported, and what a first start loaded
        is let go."""
        from deployments.engines.embedding.onnx_export import cached_export, export_roots

        assert weights is not None
        export = cached_export(spec.name, weights, export_roots(settings))
        if export is None:
            return False
        self.exported = ExportedEncoder(export, spec.pooling)
        self.model = None
        self.tokenizer = export.tokenizer
        self.token_ids = functools.partial(_backend_ids, export.tokenizer)
        self.packs = True
        self.runtime = "onnxruntime"
        self._ready("cpu", limit, export.pad_id)
        return True

    def move(self, device: str) -> None:
        """Never asked of an engine from its export (on_onnx_runtime says why)."""
        if self.exported is None:
            super().move(device)
        elif device != "cpu":
            raise RuntimeError(f"{self.name} runs from its ONNX export on the CPU only; a "
                               f"replica that can use a GPU builds its engine there")

    def forward(self, batch: list[list[int]], want: frozenset[str]) -> list[dict[str, Any]]:
        if self.exported is not None:
            return [{"dense": vector} for vector in self.exported.embed(batch)]
        ids, mask = self.pad(batch)
        with self.torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask, return_dict=True)
            pooled = self.pooling(hidden.last_hidden_state, mask)
            dense = self.torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return [{"dense": vector} for vector in dense]


class M3Encoder(FlagEncoder):
    """BGEM3FlagModel: dense, sparse (token weights) and colbert vectors in one forward."""

    name: ClassVar[str] = "bge-m3"
    outputs = frozenset({"dense", "sparse", "colbert"})

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        from FlagEmbedding import BGEM3FlagModel

        from deployments.engines.embedding.packing import packed

        self.m3 = BGEM3FlagModel(str(resolve_weights(spec, settings)), use_fp16=False,
                                 devices=[device], normalize_embeddings=True)
        limit = int(spec.options.get("max_length", 8192))
        self.m3.model.model = packed(self.m3.model.model)  # its heads run on what it gives
        self._use(self.m3.tokenizer, self.m3.model, device, spec, settings)
        self._ready(device, limit, self.tokenizer.pad_token_id or 0)
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
