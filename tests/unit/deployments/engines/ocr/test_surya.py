"""surya's results as our lines, its checkpoints from the model store, and a real run of
its predictors on tiny random-weight checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from surya.recognition.schema import OCRResult, TextLine

from deployments.engines.ocr.surya import SuryaEngine, checkpoints, lines_from_result, plain_text
from deployments.models import load_catalog
from serve_app.kernel.errors import ModelMissing
from serve_app.kernel.settings import Settings


def _settings(clean_env: pytest.MonkeyPatch, cache: Path) -> Settings:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    clean_env.setenv("MODEL_CACHE_DIR", str(cache))
    return Settings.load()


def test_surya_lines_become_ours_without_markup() -> None:
    result = OCRResult(image_bbox=[0, 0, 800, 600], text_lines=[
        TextLine(text="<b>Liebe</b> Mutter &amp; Vater,", confidence=0.93, chars=[],
                 polygon=[[10, 20], [400, 22], [400, 60], [10, 58]]),
        TextLine(text="<EOI>", confidence=0.1, chars=[], polygon=[10, 80, 50, 90]),
        TextLine(text="3 < 4", confidence=None, chars=[], polygon=[10, 100, 90, 130]),
    ])
    lines = lines_from_result(result)
    assert [line["text"] for line in lines] == ["Liebe Mutter & Vater,", "3 < 4"]
    assert lines[0]["bbox"] == (10.0, 20.0, 400.0, 60.0)
    assert lines[0]["polygon"][1] == (400.0, 22.0)
    assert lines[0]["confidence"] == 0.93 and lines[1]["confidence"] == 0.0
    assert plain_text("a<br/>b") == "ab"


def test_missing_checkpoints_name_the_path_and_how_to_fetch(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _settings(clean_env, tmp_path)
    with pytest.raises(ModelMissing, match=r"surya.*is not at"):
        checkpoints(load_catalog()["surya"], settings)
    (tmp_path / "surya" / "text_detection").mkdir(parents=True)
    (tmp_path / "surya" / "text_detection" / "config.json").write_text("{}")
    with pytest.raises(ModelMissing, match=r"text_recognition.*surya_ocr"):
        checkpoints(load_catalog()["surya"], settings)


def test_surya_predictors_read_pages_from_the_model_store(
        clean_env: pytest.MonkeyPatch, tiny_models: dict[str, str]) -> None:
    """The tiny detector marks each page as one line; the recognizer reads it (noise)."""
    settings = _settings(clean_env, Path(tiny_models["surya"]).parent)
    engine = SuryaEngine(load_catalog()["surya"], settings, "cpu")
    pages = [np.full((300, 500, 3), 255, dtype=np.uint8),
             np.full((200, 400, 3), 128, dtype=np.uint8)]
    results = engine.read(pages)
    assert len(results) == 2
    for page, lines in zip(pages, results, strict=True):
        assert len(lines) <= 1
        for line in lines:
            x0, y0, x1, y1 = line["bbox"]
            assert 0 <= x0 < x1 <= page.shape[1] and 0 <= y0 < y1 <= page.shape[0]
            assert isinstance(line["text"], str) and "<" not in line["text"]
