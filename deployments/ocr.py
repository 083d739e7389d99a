"""OCR deployment: page image in, text lines with geometry out, through the asked engine.

One replica holds the default engine (`ocr_model`) and any extra ones (`ocr_engines`,
e.g. the llm engine); a request names one or says auto, which the kernel's
`OcrEngines.resolve` turns into an engine this node has installed."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.engines.ocr import ENGINES, EngineUnavailable, OcrEngine, ocr_engines
from deployments.models import ModelSpec, resolve_weights
from deployments.replica import ControllerAnswer, ModelReplica
from serve_app.kernel.errors import InvalidInput
from serve_app.kernel.pages import Line
from serve_app.kernel.settings import Settings

logger = logging.getLogger("ray.serve")


class EngineSet:
    """The replica's engines by name; they move between devices together. An extra engine
    that is not installed on this node is left out and reported, not fatal."""

    def __init__(self, specs: tuple[ModelSpec, ...], settings: Settings, device: str):
        self.by_name: dict[str, OcrEngine] = {}
        self.unavailable: dict[str, str] = {}
        for index, spec in enumerate(specs):
            try:
                engine = ENGINES[spec.engine](spec, settings, device)
            except EngineUnavailable as exc:
                if index == 0:
                    raise
                self.unavailable[ENGINES[spec.engine].name] = str(exc)
                logger.warning("OCR engine %s unavailable: %s", spec.engine, exc)
                continue
            self.by_name[engine.name] = engine

    def move(self, device: str) -> None:
        for engine in self.by_name.values():
            engine.move(device)


@serve.deployment(name="OCR", max_ongoing_requests=32, health_check_period_s=10)
class OCR(ModelReplica):
    """One replica holds the OCR engines on its GPU share (or the CPU)."""

    deployment_name = "OCR"

    def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None, extra: tuple[ModelSpec, ...] = (),
                 keep_alive: str = "5m"):
        specs = (spec, *extra)
        for each in specs:
            resolve_weights(each, settings)  # fail the start if configured weights are missing
        self.deployed = ocr_engines(specs)
        # The LLM's keep_alive as the controller computes it; until it answers (or without
        # one), the profile's value the builder passed.
        self.keep_alive = ControllerAnswer(
            "the LLM's keep_alive", residency.keep_alive.remote if residency else None,
            keep_alive, settings.residency_poll_s)
        self.start(spec, settings, residency, lambda device: EngineSet(specs, settings, device))

    async def __del__(self) -> None:
        for engine in self.engine.by_name.values():
            if hasattr(engine, "close"):
                await engine.close()

    def choose(self, engine: str, languages: list[str]) -> OcrEngine:
        """The engine that runs for a request (auto resolved on what this node has)."""
        return self.engine.by_name[self.deployed.resolve(engine, languages,
                                                         self.engine.unavailable)]

    async def recognize(self, image: np.ndarray, engine: str, options: dict[str, Any]
                        ) -> tuple[str, list[Line]]:
        """(the engine that ran, its lines)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput("page image must be RGB")
        chosen = self.choose(engine, options.get("languages") or [])
        await self.follower.ensure()
        keep_alive = await self.keep_alive.get()
        lines = await chosen.recognize(image, {**options, "keep_alive": keep_alive})
        return chosen.name, lines

    def engines(self) -> list[str]:
        return ["auto", *self.engine.by_name]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engines": self.engines(),
                "unavailable_engines": self.engine.unavailable}
