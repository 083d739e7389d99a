"""OCR engines by name: the single registry the builder, the OCR deployment and the
HTTP schema's engine names agree on (tests/unit/deployments/test_engine_registries.py)."""

from __future__ import annotations

from collections.abc import Sequence

from deployments.engines.ocr.base import EngineUnavailable, OcrEngine
from deployments.engines.ocr.ensemble import EnsembleEngine
from deployments.engines.ocr.kraken import KrakenRecognitionEngine
from deployments.engines.ocr.llm import OllamaVlmEngine
from deployments.engines.ocr.rapidocr import RapidOcrEngine
from deployments.engines.ocr.surya import SuryaEngine
from deployments.engines.ocr.tesseract import TesseractEngine
from deployments.models import ModelSpec
from serve_app.kernel.engines import OcrEngines

ENGINES: dict[str, type[OcrEngine]] = {
    engine.name: engine for engine in (
        RapidOcrEngine, OllamaVlmEngine, TesseractEngine, KrakenRecognitionEngine, SuryaEngine,
        EnsembleEngine)
}


def ocr_engines(specs: Sequence[ModelSpec]) -> OcrEngines:
    """The deployed engines of these catalog entries, the first answering auto."""
    classes = [ENGINES[spec.engine] for spec in specs]
    return OcrEngines(tuple(cls.name for cls in classes),
                      frozenset(cls.name for cls in classes if cls.reads_baselines))


__all__ = ["ENGINES", "EngineUnavailable", "OcrEngine", "ocr_engines"]
