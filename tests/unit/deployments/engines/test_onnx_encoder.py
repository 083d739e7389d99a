"""Without a GPU the embedding encoder runs on ONNX Runtime: the same vectors as torch, an
export made once and reused (a dense model's without torch), and torch again wherever the
export fails."""

from __future__ import annotations

import gc
import logging
import shutil
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from deployments.engines.embedding import DenseEncoder, M3Encoder, onnx_encoder, onnx_export
from deployments.engines.embedding.onnx_encoder import OnnxEncoder
from deployments.engines.embedding.onnx_export import cache_key
from deployments.engines.embedding.packing import PackedEncoder
from deployments.models import ModelSpec, load_catalog
from serve_app.kernel.settings import Settings
from tests.fixtures.fresh_python import MINILM_START, fresh_python

TEXTS = ["Hallo", "Der Hund bellt im Garten.", "Liebe Mutter,",
         "Liebe Mutter, wir sind gut in Hamburg angekommen, und das Wetter ist schön.", "Ja."]
ALL = frozenset({"dense", "sparse", "colbert"})


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> Settings:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    return Settings.load()


def _torch_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"embed_cpu_runtime": "torch"})


def _tiny_m3(tiny_models: dict[str, str]) -> ModelSpec:
    return ModelSpec(name="tiny-m3", kind="embedding", engine="bge-m3", footprint_mb=1,
                     path=tiny_models["m3"])


def _minilm(settings: Settings) -> DenseEncoder:
    return DenseEncoder(load_catalog()["all-minilm-l6-v2"], settings, "cpu")


def _outputs(engine: DenseEncoder | M3Encoder, want: frozenset[str]) -> list[dict[str, Any]]:
    return engine.forward([t.ids for t in engine.tokenize(TEXTS, None)], want)


def _exports(settings: Settings) -> list[Path]:
    assert settings.model_cache_dir is not None
    return sorted((settings.model_cache_dir / "onnx").glob("*/encoder.onnx"))


def test_onnx_runtime_gives_what_torch_gives(tiny_models: dict[str, str],
                                            settings: Settings) -> None:
    """MiniLM (BERT) and BGE-M3's layout (XLM-R, positions past the padding index), packed
    rows and a padded forward alike: dense, sparse and colbert as torch computes them."""
    for build in (_minilm, lambda s: M3Encoder(_tiny_m3(tiny_models), s, "cpu")):
        onnx, plain = build(settings), build(_torch_settings(settings))
        assert (onnx.runtime, plain.runtime) == ("onnxruntime", "torch")
        want = onnx.outputs & ALL
        batches = [[t.ids for t in onnx.tokenize(TEXTS, None)],  # packed rows
                   [onnx.tokenize([TEXTS[3]], None)[0].ids]]      # one text: padded forward
        for batch in batches:
            for ours, theirs in zip(onnx.forward(batch, want), plain.forward(batch, want),
                                    strict=True):
                for key in want - {"sparse"}:
                    np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5)
                if "sparse" in want:
                    assert ours["sparse"].keys() == theirs["sparse"].keys()
                    for token, weight in theirs["sparse"].items():
                        assert ours["sparse"][token] == pytest.approx(weight, abs=1e-5)


def _loads_through_flagembedding(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Weak references to the torch model of each FlagModel loaded from now on."""
    import FlagEmbedding

    loaded: list[Any] = []
    real = FlagEmbedding.FlagModel

    def tracked(*args: Any, **kwargs: Any) -> Any:
        flag = real(*args, **kwargs)
        loaded.append(weakref.ref(flag.model))
        return flag

    monkeypatch.setattr(FlagEmbedding, "FlagModel", tracked)
    return loaded


def test_a_first_start_runs_its_new_export_as_later_starts_do_and_lets_its_model_go(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _loads_through_flagembedding(monkeypatch)
    engine = _minilm(settings)
    gc.collect()
    assert len(loaded) == 1 and loaded[0]() is None  # the torch model is not held
    assert engine.runtime == "onnxruntime" and engine.exported is not None
    assert engine.model is None and not hasattr(engine, "flag")


def test_bge_m3_runs_its_heads_in_torch_on_what_the_session_gives(
        tiny_models: dict[str, str], settings: Settings) -> None:
    """The session holds the encoder's weights; torch keeps only the heads, on one thread."""
    engine = M3Encoder(_tiny_m3(tiny_models), settings, "cpu")
    packer = engine.m3.model.model
    assert isinstance(packer, PackedEncoder) and isinstance(packer.encoder, OnnxEncoder)
    held = {name.split(".")[0] for name, _ in engine.m3.model.named_parameters()}
    assert held == {"colbert_linear", "sparse_linear"}
    assert torch.get_num_threads() == 1


def test_the_export_is_made_once_and_reused(settings: Settings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A later start loads the export and the tokenizer it saved, without FlagEmbedding:
    the same ids for every text (special tokens, accents, CJK, emoji, one truncated) and
    the same vectors as the start that made it."""
    import FlagEmbedding

    first = _minilm(settings)
    assert len(_exports(settings)) == 1

    def not_again(*_: Any, **__: Any) -> None:
        raise AssertionError("loaded through FlagEmbedding or exported again")

    monkeypatch.setattr(onnx_encoder, "export", not_again)
    monkeypatch.setattr(FlagEmbedding, "FlagModel", not_again)
    again = _minilm(settings)
    assert again.runtime == "onnxruntime" and len(_exports(settings)) == 1
    texts = [*TEXTS, "naïve Café, Straße", "日本語の手紙 🙂", "Grüße " * 400]
    assert again.tokenize(texts, None) == first.tokenize(texts, None)
    assert again.tokenize(texts, None)[-1].truncated
    assert again.pad_id == first.pad_id
    batch = [t.ids for t in first.tokenize(texts, None)]
    for ours, theirs in zip(again.forward(batch, frozenset({"dense"})),
                            first.forward(batch, frozenset({"dense"})), strict=True):
        np.testing.assert_array_equal(ours["dense"], theirs["dense"])


def test_a_start_from_the_export_imports_neither_torch_nor_the_models_code(
        settings: Settings) -> None:
    """What makes it the faster start (0.7 CPU s for the engine on 2 cores, 3 with torch,
    9 through FlagEmbedding): a fresh process."""
    _minilm(settings)
    assert fresh_python(MINILM_START, OCR_SIDECAR_API_KEY="k").split() == ["onnxruntime", "[]"]


def test_a_failed_export_keeps_torch_and_leaves_no_file(
        settings: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An export that dies after writing part of its file: the model runs on torch, the
    cache has nothing a later start would load, the staging area is empty."""
    def half_written(encoder: Any, first_position: int, folder: Path) -> None:
        (folder / onnx_encoder.MODEL_FILE).write_bytes(b"\x08\x07half")
        raise RuntimeError("Exporting the operator 'aten::foo' is not supported")

    monkeypatch.setattr(onnx_encoder, "export", half_written)
    with caplog.at_level(logging.WARNING):
        engine = _minilm(settings)
    assert engine.runtime == "torch"
    assert "stays on torch" in caplog.text and "aten::foo" in caplog.text
    assert _exports(settings) == []
    assert settings.tmp_dir is not None and list(settings.tmp_dir.iterdir()) == []
    plain = _minilm(_torch_settings(settings))
    np.testing.assert_array_equal(_outputs(engine, frozenset({"dense"}))[0]["dense"],
                                  _outputs(plain, frozenset({"dense"}))[0]["dense"])
    assert isinstance(engine.model, PackedEncoder)
    assert not isinstance(engine.model.encoder, OnnxEncoder)


def test_an_export_damaged_on_disk_is_made_again(settings: Settings,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    _minilm(settings)
    [path] = _exports(settings)
    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        engine = _minilm(settings)
    assert "does not load" in caplog.text
    assert engine.runtime == "onnxruntime" and _exports(settings) == [path]
    plain = _minilm(_torch_settings(settings))
    np.testing.assert_allclose(_outputs(engine, frozenset({"dense"}))[0]["dense"],
                               _outputs(plain, frozenset({"dense"}))[0]["dense"], atol=1e-5)


def test_a_damaged_tokenizer_in_the_export_is_made_again(
        settings: Settings, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = _minilm(settings)
    [path] = _exports(settings)
    (path.parent / onnx_export.TOKENIZER_FILE).write_text('{"version": "1.0", "trunc')
    loaded = _loads_through_flagembedding(monkeypatch)
    with caplog.at_level(logging.WARNING):
        engine = _minilm(settings)
    assert "does not load" in caplog.text and engine.runtime == "onnxruntime"
    assert len(loaded) == 1  # loaded through FlagEmbedding, which exported again
    assert _exports(settings) == [path]
    again = _minilm(settings)
    assert len(loaded) == 1  # and the next start loads that export
    assert again.tokenize(TEXTS, None) == first.tokenize(TEXTS, None)


def test_changed_model_files_get_their_own_export(tiny_models: dict[str, str],
                                                  tmp_path: Path) -> None:
    weights = Path(shutil.copytree(tiny_models["m3"], tmp_path / "m3"))
    before = cache_key(weights, "tiny-m3")
    assert cache_key(weights, "tiny-m3") == before
    assert cache_key(weights, "another-model") != before
    with (weights / "tokenizer.json").open("a") as file:
        file.write(" ")
    assert cache_key(weights, "tiny-m3") != before


@pytest.mark.parametrize(("omp", "threads"), [("1", 1), ("3", 3), (None, 0)])
def test_the_session_takes_the_threads_the_replica_was_given(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, omp: str | None,
        threads: int) -> None:
    """OMP_NUM_THREADS, as the serve configs set it per replica (torch read it before the
    session ran without torch); unset, ONNX Runtime's default of one a physical core."""
    _minilm(settings)
    [path] = _exports(settings)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    options = onnx_export.session(path).get_session_options()
    assert options.intra_op_num_threads == threads


def test_a_damaged_installed_export_gives_way_to_one_in_the_cache(
        settings: Settings, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The install's export (INSTALLED_MODEL_CACHE_DIR) damaged: the start exports into
    MODEL_CACHE_DIR as a first start would, and the next start loads that one."""
    assert settings.model_cache_dir is not None
    _minilm(settings)
    [path] = _exports(settings)
    installed = settings.installed_model_cache_dir / "onnx"
    installed.mkdir(parents=True)
    moved = Path(shutil.move(path.parent, installed)) / path.name
    moved.write_bytes(moved.read_bytes()[:1000])
    loaded = _loads_through_flagembedding(monkeypatch)
    with caplog.at_level(logging.WARNING):
        engine = _minilm(settings)
    assert "does not load" in caplog.text and engine.runtime == "onnxruntime"
    assert len(loaded) == 1 and _exports(settings) == [path]
    _minilm(settings)
    assert len(loaded) == 1  # the next start loads the cache's export
