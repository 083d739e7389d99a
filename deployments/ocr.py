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
from ray.serve.metrics import Counter

from deployments.engines.ocr import ENGINES, EngineUnavailable, OcrEngine, ocr_engines
from deployments.engines.ocr.tesseract import TesseractEngine
from deployments.models import ModelSpec, resolve_weights
from deployments.replica import ControllerAnswer, ModelReplica
from serve_app.kernel.errors import InvalidInput
from serve_app.kernel.settings import Settings

logger = logging.getLogger("ray.serve")
# OSD's script confidence from which auto reads a page as Fraktur print: the real Fraktur
# page of tests/fixtures/real scores 13.6; synthetic Latin scans stay under 1.
FRAKTUR_MIN_CONFIDENCE = 2.0


class EngineSet:
    """The replica's engines by name; they move between devices together. An extra engine
    that is not installed on this node is left out and reported, not fatal."""

    def __init__(self, specs: tuple[ModelSpec, ...], settings: Settings, device: str):
        self.settings, self.device = settings, device
        self.by_name: dict[str, OcrEngine] = {}
        self.unavailable: dict[str, str] = {}
        # Engines serving a trained model: engine name -> {"name", "version"}.
        self.models: dict[str, dict[str, Any]] = {}
        for index, spec in enumerate(specs):
            self.build(spec, required=index == 0)

    def build(self, spec: ModelSpec, required: bool = False,
              trained: dict[str, Any] | None = None) -> None:
        """(Re)build one engine; the old one keeps serving the requests it has."""
        name = ENGINES[spec.engine].name
        try:
            engine = ENGINES[spec.engine](spec, self.settings, self.device)
        except EngineUnavailable as exc:
            if required:
                raise
            self.by_name.pop(name, None)
            self.models.pop(name, None)
            self.unavailable[name] = str(exc)
            logger.warning("OCR engine %s unavailable: %s", spec.engine, exc)
            return
        self.by_name[name] = engine
        self.unavailable.pop(name, None)
        if trained or spec.trained:
            self.models[name] = trained or {"name": spec.trained, "version": None}
        else:
            self.models.pop(name, None)

    def move(self, device: str) -> None:
        for engine in self.by_name.values():
            engine.move(device)
        self.device = device


# Bounded queue: 8 pages in flight per document, so about 12 documents at once; beyond
# that, 503 with Retry-After rather than a wait no client would sit through.
@serve.deployment(name="OCR", max_ongoing_requests=32, max_queued_requests=64,
                  health_check_period_s=10)
class OCR(ModelReplica):
    """One replica holds the OCR engines on its GPU share (or the CPU)."""

    deployment_name = "OCR"

    async def __init__(self, spec: ModelSpec, settings: Settings,
                       residency: DeploymentHandle | None = None,
                       extra: tuple[ModelSpec, ...] = (),
                       keep_alive: dict[str, str] | None = None):
        specs = (spec, *extra)
        for each in specs:  # fail the start if configured weights are missing
            if not each.trained:
                resolve_weights(each, settings)
        self.deployed = ocr_engines(specs)
        # keep_alive for the llm engine as the controller computes it from the live VRAM
        # ({"busy", "idle", "reason"}); until it answers (or without one), the profile's.
        self.keep_alive = ControllerAnswer(
            "the LLM's keep_alive", residency.keep_alive.remote if residency else None,
            keep_alive or {"busy": "5m", "idle": "30s", "reason": "default"},
            settings.residency_poll_s)
        self.llm_pages = 0  # pages of ours in flight to the VLM
        self.pages_read = Counter("ocr_graph_ocr_pages", "Pages OCR'd, by the engine that "
                                  "read them.", tag_keys=("engine",))
        self.specs, self.settings = specs, settings
        self.start(spec, settings, residency, lambda device: EngineSet(specs, settings, device))
        self.follow_trained([s.trained for s in specs if s.trained], settings)
        for each in specs:
            if each.trained and ENGINES[each.engine].name in self.engine.models:
                self.engine.models[ENGINES[each.engine].name]["version"] = (
                    self.trained.loaded.get(each.trained))
        self.follow_placement()

    def load_trained(self, changes: dict[str, int | None]) -> None:
        """Rebuild the engines whose trained model has a new version."""
        for index, spec in enumerate(self.specs):
            if spec.trained not in changes:
                continue
            version = changes[spec.trained]
            found = self.trained.store.version(spec.trained, version)
            pinned = spec.model_copy(update={"trained": None, "path": str(found.path)}) if (
                found) else spec
            self.engine.build(pinned, required=index == 0,
                              trained={"name": spec.trained, "version": version} if found
                              else None)

    async def __del__(self) -> None:
        for engine in self.engine.by_name.values():
            if hasattr(engine, "close"):
                await engine.close()

    def choose(self, engine: str, languages: list[str]) -> OcrEngine:
        """The engine that runs for a request (auto resolved on what this node has)."""
        return self.engine.by_name[self.deployed.resolve(engine, languages,
                                                         self.engine.unavailable)]

    async def choose_for_page(self, engine: str, languages: list[str], image: np.ndarray
                              ) -> tuple[OcrEngine, str | None, list[str]]:
        """The engine for this page and, for auto, why: the request's languages when it
        names German or Fraktur, else the page itself: tesseract's script detection sends
        Fraktur print to the ensemble, or to tesseract's Fraktur model where no ensemble
        is deployed (a backend rarely knows what it uploads)."""
        chosen = self.choose(engine, languages)
        if engine != "auto":
            return chosen, None, languages
        if languages:
            return chosen, f"auto: languages {languages} -> {chosen.name}", languages
        tesseract = self.engine.by_name.get("tesseract")
        if not isinstance(tesseract, TesseractEngine):
            return chosen, (f"auto: {chosen.name}, the default (no tesseract here to detect "
                            "the script)"), languages
        script, confidence = await tesseract.script(image)
        seen = f"tesseract's script detection: {script} (confidence {confidence:.1f})"
        if script == "Fraktur" and confidence >= FRAKTUR_MIN_CONFIDENCE:
            # The vote reads Fraktur best, then tesseract's Fraktur model alone
            # (bench/ocr_quality.py).
            ensemble = self.engine.by_name.get("ensemble")
            if ensemble is not None:
                return ensemble, f"auto: {seen} -> ensemble, Fraktur", []
            return tesseract, f"auto: {seen} -> tesseract, Fraktur", ["fraktur"]
        return chosen, f"auto: {seen} -> {chosen.name}, the default", languages

    async def recognize(self, image: np.ndarray, engine: str, options: dict[str, Any]
                        ) -> dict[str, Any]:
        """{"engine": the engine that ran, "lines": its lines, "model": the trained model
        and version it used, if any}."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput("page image must be RGB")
        await self.sync_trained()
        chosen, why, languages = await self.choose_for_page(
            engine, options.get("languages") or [], image)
        options = {**options, "languages": languages}
        answer = await self.keep_alive.get()
        self.llm_pages += chosen.name == "llm"
        try:
            # More of our pages waiting for the VLM: keep it loaded; the last one: idle.
            keep_alive = answer["busy"] if self.llm_pages > 1 else answer["idle"]
            lines = await self.follower.run(
                lambda: chosen.recognize(image, {**options, "keep_alive": keep_alive}))
        finally:
            self.llm_pages -= chosen.name == "llm"
        self.pages_read.inc(tags={"engine": chosen.name})
        return {"engine": chosen.name, "lines": lines, "reason": why,
                "model": self.engine.models.get(chosen.name)}

    def engines(self) -> list[str]:
        return ["auto", *self.engine.by_name]

    async def describe(self) -> dict[str, Any]:
        await self.sync_trained()
        return {**super().describe(), "engines": self.engines(),
                "unavailable_engines": self.engine.unavailable,
                "trained_models": list(self.engine.models.values()) or None}
