"""OCR deployment: page image in, text lines with geometry out, through the asked engine.

One replica holds the default engine (`ocr_model`) and any extra ones (`ocr_engines`,
e.g. the llm engine); a request names one or says auto for the default."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.models import ModelSpec, resolve_weights
from deployments.ocr_llm import OllamaVlmEngine
from deployments.replica import ModelReplica
from serve_app.errors import InvalidInput
from serve_app.settings import Settings


class OcrEngine(Protocol):
    """Recognises every text line of one RGB page image."""

    name: str

    async def recognize(self, image: np.ndarray, options: dict[str, Any]
                        ) -> list[dict[str, Any]]: ...

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

    async def recognize(self, image: np.ndarray, options: dict[str, Any]
                        ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._recognize, image)

    def _recognize(self, image: np.ndarray) -> list[dict[str, Any]]:
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


ENGINES: dict[str, type[OcrEngine]] = {"rapidocr": RapidOcrEngine, "llm": OllamaVlmEngine}


class EngineSet:
    """The replica's engines by name; they move between devices together."""

    def __init__(self, engines: list[OcrEngine]):
        self.by_name = {engine.name: engine for engine in engines}

    def move(self, device: str) -> None:
        for engine in self.by_name.values():
            engine.move(device)


@serve.deployment(name="OCR", max_ongoing_requests=32, health_check_period_s=10)
class OCR(ModelReplica):
    """One replica holds the OCR engines on its GPU share (or the CPU)."""

    deployment_name = "OCR"

    def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None, extra: tuple[ModelSpec, ...] = ()):
        specs = (spec, *extra)
        for each in specs:
            resolve_weights(each, settings)  # fail the start if configured weights are missing
        self.default_engine = ENGINES[spec.engine].name
        self.residency = residency
        self.keep_alive_cache: tuple[float, str] = (float("-inf"), "")
        self.cache_s = settings.residency_poll_s
        self.start(spec, settings, residency, lambda device: EngineSet(
            [ENGINES[each.engine](each, settings, device) for each in specs]))

    async def __del__(self) -> None:
        for engine in self.engine.by_name.values():
            if hasattr(engine, "close"):
                await engine.close()

    async def keep_alive(self) -> str:
        """The LLM's keep_alive under the current residency profile, cached one poll."""
        checked, value = self.keep_alive_cache
        if self.residency is not None and time.monotonic() - checked >= self.cache_s:
            value = await self.residency.keep_alive.remote()
            self.keep_alive_cache = (time.monotonic(), value)
        return value

    async def recognize(self, image: np.ndarray, engine: str, options: dict[str, Any]
                        ) -> list[dict[str, Any]]:
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput("page image must be RGB")
        chosen = self.engine.by_name.get(self.default_engine if engine == "auto" else engine)
        if chosen is None:
            raise InvalidInput(f"OCR engine {engine!r} is not deployed here",
                               {"field": "engine", "available": self.engines()})
        await self.follower.ensure()
        return await chosen.recognize(image, {**options, "keep_alive": await self.keep_alive()})

    def engines(self) -> list[str]:
        return ["auto", *self.engine.by_name]
