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
