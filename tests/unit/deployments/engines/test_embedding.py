"""Our forwards give what FlagEmbedding's own encode gives, on real code paths."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.engines.embedding import DenseEncoder, M3Encoder
from deployments.models import ModelSpec, load_catalog, resolve_weights
from serve_app.kernel.settings import Settings

TEXTS = ["Der Hund bellt im Garten.", "Hallo", "Liebe Mutter, wir sind gut in Hamburg angekommen."]


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> Settings:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    return Settings.load()


def _tiny_m3(tiny_models: dict[str, str]) -> ModelSpec:
    return ModelSpec(name="tiny-m3", kind="embedding", engine="bge-m3", footprint_mb=1,
                     path=tiny_models["m3"])


def _forward_all(engine: M3Encoder | DenseEncoder, want: frozenset[str]) -> list[dict]:
    tokens = engine.tokenize(TEXTS, None)
    return engine.forward([t.ids for t in tokens], want)


def test_m3_outputs_match_bgem3flagmodel(tiny_models: dict[str, str], settings: Settings) -> None:
    from FlagEmbedding import BGEM3FlagModel

    engine = M3Encoder(_tiny_m3(tiny_models), settings, "cpu")
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


def test_sparse_keys_are_real_tokens(tiny_models: dict[str, str], settings: Settings) -> None:
    engine = M3Encoder(_tiny_m3(tiny_models), settings, "cpu")
    item = _forward_all(engine, frozenset({"sparse"}))[0]
    assert item["sparse"] and all(token in TEXTS[0] for token in item["sparse"])


def test_minilm_dense_matches_flagmodel_encode(settings: Settings) -> None:
    from FlagEmbedding import FlagModel

    spec = load_catalog()["all-minilm-l6-v2"]
    path = str(resolve_weights(spec, settings))
    ours = _forward_all(DenseEncoder(spec, settings, "cpu"), frozenset({"dense"}))
    ref = FlagModel(path, pooling_method="mean", normalize_embeddings=True, use_fp16=False,
                    devices=["cpu"]).encode(TEXTS)
    np.testing.assert_allclose(np.stack([i["dense"] for i in ours]), ref, atol=1e-5)


def test_long_texts_are_truncated_and_say_so(tiny_models: dict[str, str],
                                             settings: Settings) -> None:
    engine = M3Encoder(_tiny_m3(tiny_models), settings, "cpu")
    short, long = engine.tokenize(["Hallo", "Hallo Welt " * 100], max_length=16)
    assert not short.truncated
    assert long.truncated and len(long.ids) == 16
    assert long.ids[-1] == engine.tokenizer.eos_token_id
