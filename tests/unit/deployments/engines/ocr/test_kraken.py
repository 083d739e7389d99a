"""kraken recognition on given baselines, word boxes from its cuts, missing models."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.engines.ocr.kraken import KrakenRecognitionEngine, words_from_cuts
from deployments.models import load_catalog
from serve_app.kernel.errors import InvalidInput, ModelMissing
from serve_app.kernel.settings import Settings


def _kraken(clean_env: pytest.MonkeyPatch, path: str) -> KrakenRecognitionEngine:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    spec = load_catalog({"rec": {"kind": "ocr", "engine": "kraken", "footprint_mb": 1,
                                 "path": path}})["rec"]
    return KrakenRecognitionEngine(spec, Settings.load(), "cpu")


def test_kraken_recognises_each_given_baseline_line(clean_env: pytest.MonkeyPatch,
                                                    tiny_models: dict[str, str]) -> None:
    engine = _kraken(clean_env, tiny_models["kraken"])
    image = np.full((200, 600, 3), 255, dtype=np.uint8)
    image[60:90, 40:560] = 0  # something line-like to cut out
    line = {"baseline": [(40.0, 85.0), (560.0, 85.0)],
            "boundary": [(40.0, 55.0), (560.0, 55.0), (560.0, 95.0), (40.0, 95.0)],
            "bbox": (40.0, 55.0, 560.0, 95.0), "region": "r1"}
    degenerate = {**line, "baseline": [(40.0, 85.0)]}  # one point: not a line, skipped
    lines = asyncio.run(engine.recognize(image, {"segmentation": [line, degenerate]}))
    assert len(lines) == 1
    [got] = lines
    assert isinstance(got["text"], str)
    assert got["baseline"] == line["baseline"] and got["polygon"] == line["boundary"]
    assert got["region"] == "r1"
    assert got["confidence"] is None or 0.0 <= got["confidence"] <= 1.0
    assert asyncio.run(engine.recognize(image, {"segmentation": []})) == []
    with pytest.raises(InvalidInput, match="segmented lines"):
        asyncio.run(engine.recognize(image, {}))


def test_kraken_character_cuts_become_word_boxes() -> None:
    square = lambda x: [(x, 10), (x + 8, 10), (x + 8, 30), (x, 30)]  # noqa: E731
    cuts = [square(x) for x in (0, 10, 20, 30, 40)]
    words = words_from_cuts("ab cd", cuts, [0.9, 0.7, 0.5, 1.0, 0.6])
    assert words == [{"text": "ab", "bbox": (0.0, 10.0, 18.0, 30.0), "confidence": 0.8},
                     {"text": "cd", "bbox": (30.0, 10.0, 48.0, 30.0), "confidence": 0.8}]
    assert words_from_cuts("ab cd", cuts[:3], [0.9] * 3) is None  # cuts do not line up
    assert words_from_cuts("  ", [], []) is None


def test_a_missing_kraken_model_names_its_path(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelMissing, match=r"kraken/absent\.mlmodel"):
        _kraken(clean_env, "kraken/absent.mlmodel")
