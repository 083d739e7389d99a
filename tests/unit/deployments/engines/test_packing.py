"""Packed forwards give each text what the encoder gives it alone, and the engines use them:
on torch (packing.py) and from a dense model's export without torch (exported.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from deployments.engines.embedding import DenseEncoder, M3Encoder
from deployments.engines.embedding.packing import PackedEncoder
from deployments.engines.embedding.rows import PACK_WIDTH, pack_rows
from deployments.models import ModelSpec, load_catalog
from serve_app.kernel.settings import Settings

# Lengths that share rows (several short texts in one) and one text over PACK_WIDTH.
TEXTS = ["Hallo", "Der Hund bellt im Garten.", "Liebe Mutter,",
         "Liebe Mutter, wir sind gut in Hamburg angekommen, und das Wetter ist schön, aber "
         "die Koffer sind noch unterwegs und der Onkel lässt grüßen.", "Ja.", "Gruß, Anna"]


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> Settings:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    return Settings.load()


def test_rows_hold_every_text_once_longest_first_within_the_width() -> None:
    lengths = [20, 12, 12, 8, 30, 45]
    rows = pack_rows(lengths, 32)
    assert rows == [[5], [4], [0, 1], [2, 3]]  # 45 is over the width: a row of its own
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))


def _engines(tiny_models: dict[str, str], settings: Settings) -> list[DenseEncoder | M3Encoder]:
    """The torch engines: MiniLM on torch (on ONNX Runtime it runs from its export, below),
    BGE-M3's layout on ONNX Runtime behind PackedEncoder."""
    m3 = ModelSpec(name="tiny-m3", kind="embedding", engine="bge-m3", footprint_mb=1,
                   path=tiny_models["m3"])
    on_torch = settings.model_copy(update={"embed_cpu_runtime": "torch"})
    return [DenseEncoder(load_catalog()["all-minilm-l6-v2"], on_torch, "cpu"),
            M3Encoder(m3, settings, "cpu")]


def _packed_encoder(engine: DenseEncoder | M3Encoder) -> PackedEncoder:
    encoder = engine.model if isinstance(engine, DenseEncoder) else engine.model.model
    assert isinstance(encoder, PackedEncoder) and engine.packs
    return encoder


def test_each_text_gets_what_the_encoder_gives_it_alone(tiny_models: dict[str, str],
                                                        settings: Settings) -> None:
    """BERT (MiniLM) and XLM-R (BGE-M3's layout; its positions start past the padding
    index): a text's hidden states do not depend on the texts packed beside it."""
    for engine in _engines(tiny_models, settings):
        packer = _packed_encoder(engine)
        ids, mask = engine.pad([t.ids for t in engine.tokenize(TEXTS, None)])
        assert any(len(row) > 1 for row in pack_rows(mask.sum(1).tolist(), PACK_WIDTH))
        with torch.inference_mode():
            together = packer(input_ids=ids, attention_mask=mask).last_hidden_state
            for row, length in enumerate(mask.sum(1).tolist()):
                alone = packer.encoder(input_ids=ids[row:row + 1, :length],
                                       attention_mask=mask[row:row + 1, :length]
                                       ).last_hidden_state[0]
                torch.testing.assert_close(together[row, :length], alone, atol=1e-5,
                                           rtol=1e-4)
                assert not together[row, length:].any()  # padding stays empty


def test_the_engines_run_their_encoder_on_packed_rows(tiny_models: dict[str, str],
                                                      settings: Settings) -> None:
    """What the encoder computes is the texts' tokens (and a row's unused end), not the
    texts times the longest."""
    for engine in _engines(tiny_models, settings):
        packer = _packed_encoder(engine)
        shapes: list[tuple[int, ...]] = []

        def record(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                   seen: list[tuple[int, ...]] = shapes) -> None:
            seen.append(tuple(kwargs["input_ids"].shape))

        hook = packer.encoder.register_forward_pre_hook(record, with_kwargs=True)
        try:
            tokens = [t.ids for t in engine.tokenize(TEXTS, None)]
            engine.forward(tokens, frozenset({"dense"}))
        finally:
            hook.remove()
        rows, width = shapes[0]
        lengths = sorted((len(ids) for ids in tokens), reverse=True)
        assert rows < len(tokens)  # short texts share rows
        assert rows * width < len(tokens) * lengths[0]


def test_a_forward_packing_cannot_shrink_runs_padded_without_a_row_mask(
        tiny_models: dict[str, str], settings: Settings) -> None:
    """Texts of one length, or one long text: the encoder's own padded forward, with no
    rows x width x width mask (for a text of 8,192 tokens that mask alone is 64 MB)."""
    for engine in _engines(tiny_models, settings):
        packer = _packed_encoder(engine)
        masks: list[int] = []

        def record(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                   seen: list[int] = masks) -> None:
            seen.append(kwargs["attention_mask"].dim())

        hook = packer.encoder.register_forward_pre_hook(record, with_kwargs=True)
        try:
            long = engine.tokenize([TEXTS[3]], None)[0].ids
            engine.forward([long], frozenset({"dense"}))
            engine.forward([long[:20]] * 4, frozenset({"dense"}))
            engine.forward([t.ids for t in engine.tokenize(TEXTS, None)], frozenset({"dense"}))
        finally:
            hook.remove()
        assert masks == [2, 2, 3]  # padded, padded, packed


class Recorded:
    """An ONNX Runtime session that keeps the shape of every `input_ids` it is given."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.shapes: list[tuple[int, ...]] = []

    def run(self, outputs: Any, feed: dict[str, np.ndarray]) -> Any:
        self.shapes.append(feed["input_ids"].shape)
        return self.session.run(outputs, feed)


def test_a_dense_model_from_its_export_packs_its_rows_and_keeps_texts_apart(
        settings: Settings) -> None:
    """Without torch: short texts share rows, a long one gets its own, and each text's
    vector is the one it gets alone."""
    engine = DenseEncoder(load_catalog()["all-minilm-l6-v2"], settings, "cpu")
    assert engine.exported is not None
    session = engine.exported.session = Recorded(engine.exported.session)
    tokens = [t.ids for t in engine.tokenize(TEXTS, None)]
    together = engine.forward(tokens, frozenset({"dense"}))
    [(rows, width)] = session.shapes
    assert rows < len(tokens) and rows * width < len(tokens) * max(map(len, tokens))
    for ids, packed in zip(tokens, together, strict=True):
        [alone] = engine.forward([ids], frozenset({"dense"}))
        np.testing.assert_allclose(packed["dense"], alone["dense"], atol=1e-5)
