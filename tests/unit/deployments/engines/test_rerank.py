"""The cross-encoder engine scores what FlagReranker's own compute_score gives."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.engines.rerank import CrossEncoderEngine, RerankJob
from deployments.models import ModelSpec
from serve_app.kernel.settings import Settings

TEXTS = ["Der Hund bellt im Garten.", "Hallo", "Liebe Mutter, wir sind gut in Hamburg angekommen."]


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> Settings:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    return Settings.load()


def test_cross_encoder_matches_flagreranker(tiny_models: dict[str, str], settings: Settings
                                            ) -> None:
    from FlagEmbedding import FlagReranker

    spec = ModelSpec(name="tiny-rr", kind="rerank", engine="flag-reranker", footprint_mb=1,
                     path=tiny_models["reranker"])
    engine = CrossEncoderEngine(spec, settings, "cpu")
    jobs = [RerankJob("Hund", TEXTS, 128), RerankJob("Hamburg", TEXTS[:2], 128)]
    ours = asyncio.run(engine.score(jobs))
    ref = FlagReranker(tiny_models["reranker"], use_fp16=False, devices=["cpu"]).compute_score(
        [("Hund", t) for t in TEXTS], normalize=True)
    np.testing.assert_allclose(ours[0], ref, atol=1e-5)
    assert len(ours[1]) == 2


def test_pairs_run_longest_first_across_forwards_and_come_back_in_their_jobs_order(
        tiny_models: dict[str, str], settings: Settings) -> None:
    """150 documents of 1 to 60 words in three jobs: more than one forward, each padded to
    its own longest; every score is where its document was, as FlagReranker scores it."""
    from FlagEmbedding import FlagReranker

    spec = ModelSpec(name="tiny-rr", kind="rerank", engine="flag-reranker", footprint_mb=1,
                     path=tiny_models["reranker"])
    engine = CrossEncoderEngine(spec, settings, "cpu")
    words = ["Brief", "an", "die", "Mutter", "aus", "Hamburg", "über", "das", "Erbe", "des",
             "Onkels"]
    documents = [" ".join(words[: 1 + i % 11] * (1 + i % 6)) for i in range(150)]
    jobs = [RerankJob("Erbe", documents[:70], 128), RerankJob("Hamburg", documents[70:72], 128),
            RerankJob("Mutter", documents[72:], 128)]
    ours = asyncio.run(engine.score(jobs))
    reference = FlagReranker(tiny_models["reranker"], use_fp16=False, devices=["cpu"])
    for job, scores in zip(jobs, ours, strict=True):
        expected = reference.compute_score([(job.query, d) for d in job.documents],
                                           normalize=True, max_length=job.max_length)
        np.testing.assert_allclose(scores, np.atleast_1d(expected), atol=1e-5)
