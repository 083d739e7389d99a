"""OCR deployment: page image in, text lines with geometry out, through one engine."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import numpy as np
from ray import serve

from deployments.models import ModelSpec, resolve_weights
from deployments.replica import best_device, replica_info
from serve_app.errors import InvalidInput
from serve_app.settings import Settings

logger = logging.getLogger("ray.serve")


class OcrEngine(Protocol):
    """Recognises every text line of one RGB page image."""

    name: str

    def recognize(self, image: np.ndarray, languages: list[str]) -> list[dict[str, Any]]: ...


class RapidOcrEngine:
    """PP-OCR through rapidocr's ONNX runtime; the weights ship inside its wheel."""

    name = "rapidocr"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        from rapidocr import RapidOCR

        params: dict[str, Any] = {"Global.log_level": "warning"}
        if device == "cuda":
            params["EngineConfig.onnxruntime.use_cuda"] = True
        params.update(spec.options)
        self._ocr = RapidOCR(params=params)

    def recognize(self, image: np.ndarray, languages: list[str]) -> list[dict[str, Any]]:
        result = self._ocr(image)
        if result.boxes is None or result.txts is None:
            return []
        lines = []
        for box, text, score in zip(result.boxes, result.txts, result.scores, strict=True):
            polygon = [(round(float(x), 1), round(float(y), 1)) for x, y in box]
            xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
            lines.append({
                "text": text,
                "bbox": (min(xs), min(ys), max(xs), max(ys)),
                "polygon": polygon,
                "confidence": round(min(max(float(score), 0.0), 1.0), 4),
            })
        # Reading order: top to bottom, then left to right within a visual row.
        lines.sort(key=lambda line: (round(line["bbox"][1] / 20), line["bbox"][0]))
        return lines


ENGINES: dict[str, type[OcrEngine]] = {"rapidocr": RapidOcrEngine}


@serve.deployment(name="OCR", max_ongoing_requests=8, health_check_period_s=10)
class OCR:
    """One replica holds one OCR engine on its GPU share (or the CPU)."""

    def __init__(self, spec: ModelSpec, settings: Settings):
        resolve_weights(spec, settings)  # fail the start if configured weights are missing
        self.spec = spec
        self.device = best_device()
        self.engine = ENGINES[spec.engine](spec, settings, self.device)
        logger.info("OCR engine %s ready on %s", spec.engine, self.device)

    async def recognize(self, image: np.ndarray, languages: list[str]) -> list[dict[str, Any]]:
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput("page image must be RGB")
        return await asyncio.to_thread(self.engine.recognize, image, languages)

    def engines(self) -> list[str]:
        return [self.engine.name]

    def describe(self) -> dict[str, Any]:
        return replica_info("OCR", self.spec, self.device)
