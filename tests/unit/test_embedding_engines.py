"""Our forwards give what FlagEmbedding's own encode/compute_score give, on real code paths."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.embedding import (
    MAX_BATCH_TOKENS,
    MAX_JOB_TOKENS,
    DenseEncoder,
    M3Encoder,
    Tokenized,
    batch_tokens,
    split_into_jobs,
)
from deployments.models import ModelSpec, resolve_weights
from deployments.rerank import CrossEncoderEngine, RerankJob
from serve_app.settings import Settings

TEXTS = ["Der Hund bellt im Garten.", "Hallo", "Liebe Mutter, wir sind gut in Hamburg angekommen."]


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> Settings:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    return Settings.load()


def _forward_all(engine: M3Encoder | DenseEncoder, want: frozenset[str]) -> list[dict]:
    tokens = engine.tokenize(TEXTS, None)
    return engine.forward([t.ids for t in tokens], want)


def test_m3_outputs_match_bgem3flagmodel(tiny_models: dict[str, str]) -> None:
    from FlagEmbedding import BGEM3FlagModel

    spec = ModelSpec(name="tiny-m3", kind="embedding", engine="bge-m3", footprint_mb=1)
    engine = M3Encoder(tiny_models["m3"], spec, "cpu")
    ours = _forward_all(engine, frozenset({"dense", "sparse", "colbert"}))
    ref = BGEM3FlagModel(tiny_models["m3"], use_fp16=False, devices=["cpu"]).encode(
        TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    for i, item in enumerate(ours):
        np.testing.assert_allclose(item["dense"], ref["dense_vecs"][i], atol=1e-5)
        np.testing.assert_allclose(item["colbert"], ref["colbert_vecs"][i], atol=1e-5)
        expected = {engine.token_text(int(k)): float(v)
                    for k, v in ref["lexical_weights"][i].items() if engine.token_text(int(k))}
        assert item["sparse"].keys() == expected.keys()
        for token, weight in expected.items():
            assert item["sparse"][token] == pytest.approx(weight, abs=1e-5)


def test_sparse_keys_are_real_tokens(tiny_models: dict[str, str]) -> None:
    spec = ModelSpec(name="tiny-m3", kind="embedding", engine="bge-m3", footprint_mb=1)
    engine = M3Encoder(tiny_models["m3"], spec, "cpu")
    item = _forward_all(engine, frozenset({"sparse"}))[0]
    assert item["sparse"] and all(token in TEXTS[0] for token in item["sparse"])


def test_minilm_dense_matches_flagmodel_encode(settings: Settings) -> None:
    from FlagEmbedding import FlagModel

    spec = load_spec("all-minilm-l6-v2")
    path = str(resolve_weights(spec, settings))
    ours = _forward_all(DenseEncoder(path, spec, "cpu"), frozenset({"dense"}))
    ref = FlagModel(path, pooling_method="mean", normalize_embeddings=True, use_fp16=False,
                    devices=["cpu"]).encode(TEXTS)
    np.testing.assert_allclose(np.stack([i["dense"] for i in ours]), ref, atol=1e-5)


def test_long_texts_are_truncated_and_say_so(tiny_models: dict[str, str]) -> None:
    spec = ModelSpec(name="tiny-m3", kind="embedding", engine="bge-m3", footprint_mb=1)
    engine = M3Encoder(tiny_models["m3"], spec, "cpu")
    short, long = engine.tokenize(["Hallo", "Hallo Welt " * 100], max_length=16)
    assert not short.truncated
    assert long.truncated and len(long.ids) == 16
    assert long.ids[-1] == engine.tokenizer.eos_token_id


def test_cross_encoder_matches_flagreranker(tiny_models: dict[str, str], settings: Settings
                                            ) -> None:
    from FlagEmbedding import FlagReranker

    spec = ModelSpec(name="tiny-rr", kind="rerank", engine="flag-reranker", footprint_mb=1,
                     path=tiny_models["reranker"])
    engine = CrossEncoderEngine(spec, settings, "cpu", None)
    jobs = [RerankJob("Hund", TEXTS, 128), RerankJob("Hamburg", TEXTS[:2], 128)]
    ours = asyncio.run(engine.score(jobs))
    ref = FlagReranker(tiny_models["reranker"], use_fp16=False, devices=["cpu"]).compute_score(
        [("Hund", t) for t in TEXTS], normalize=True)
    np.testing.assert_allclose(ours[0], ref, atol=1e-5)
    assert len(ours[1]) == 2


def load_spec(name: str) -> ModelSpec:
    from deployments.models import load_catalog

    return load_catalog()[name]


def test_requests_are_queued_as_jobs_bounded_in_tokens() -> None:
    """A request of long texts becomes several jobs, in order; batch_size_fn counts tokens,
    so a batch holds at most MAX_BATCH_TOKENS and any single job fits in one."""
    lengths = [3000, 3000, 3000, 8192, 10, 10]
    tokens = [Tokenized(list(range(n)), truncated=n == 8192) for n in lengths]
    jobs = split_into_jobs(tokens, frozenset({"dense"}))
    assert [[len(t.ids) for t in job.tokens] for job in jobs] == [
        [3000, 3000], [3000], [8192], [10, 10]]
    assert all(job.size <= MAX_JOB_TOKENS <= MAX_BATCH_TOKENS for job in jobs)
    assert batch_tokens(jobs) == sum(lengths)
    assert split_into_jobs([], frozenset({"dense"})) == []
