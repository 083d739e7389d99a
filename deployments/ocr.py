"""OCR deployment: page image in, text lines with geometry out, through one engine."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.models import ModelSpec, resolve_weights
from deployments.replica import ModelReplica
from serve_app.errors import InvalidInput
from serve_app.settings import Settings


class OcrEngine(Protocol):
    """Recognises every text line of one RGB page image."""

    name: str

    def recognize(self, image: np.ndarray, languages: list[str]) -> list[dict[str, Any]]: ...

    def move(self, device: str) -> None: ...


class RapidOcrEngine:
    """PP-OCR through rapidocr's ONNX runtime; the weights ship inside its wheel."""

    name = "rapidocr"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self.spec = spec
        self.move(device)

    def move(self, device: str) -> None:
        """onnxruntime sessions are bound to a provider: a move builds new ones."""
        from rapidocr import RapidOCR

        params: dict[str, Any] = {"Global.log_level": "warning",
                                  "EngineConfig.onnxruntime.use_cuda": device == "cuda"}
        params.update(self.spec.options)
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
class OCR(ModelReplica):
    """One replica holds one OCR engine on its GPU share (or the CPU)."""

    deployment_name = "OCR"

    def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None):
        resolve_weights(spec, settings)  # fail the start if configured weights are missing
        self.start(spec, settings, residency,
                   lambda device: ENGINES[spec.engine](spec, settings, device))

    async def recognize(self, image: np.ndarray, languages: list[str]) -> list[dict[str, Any]]:
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput("page image must be RGB")
        await self.follower.ensure()
        return await asyncio.to_thread(self.engine.recognize, image, languages)
