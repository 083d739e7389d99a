"""OCR deployment: page image in, text lines with geometry out, through the asked engine.

One replica holds the default engine (`ocr_model`) and any extra ones (`ocr_engines`,
e.g. the llm engine); a request names one or says auto for the default."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from typing import Any, Protocol

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.geometry import bbox_of, confidence
from deployments.models import ModelSpec, resolve_weights
from deployments.ocr_kraken import KrakenRecognitionEngine
from deployments.ocr_llm import OllamaVlmEngine
from deployments.ocr_surya import SuryaEngine
from deployments.policy import calculate_ocr_residency
from deployments.replica import ControllerAnswer, ModelReplica
from deployments.residency import load_profile
from serve_app.errors import InvalidInput
from serve_app.settings import Settings

logger = logging.getLogger("ray.serve")


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
            lines.append({"text": text, "bbox": bbox_of(polygon), "polygon": polygon,
                          "confidence": confidence(score)})
        # Reading order: top to bottom, then left to right within a visual row.
        lines.sort(key=lambda line: (round(line["bbox"][1] / 20), line["bbox"][0]))
        return lines


class EngineUnavailable(RuntimeError):
    """An engine whose program or data is not installed on this replica's node."""


# What request languages mean to Tesseract (`tesseract --list-langs` names).
TESSERACT_LANGUAGES = {"deu": "deu", "ger": "deu", "de": "deu", "eng": "eng", "en": "eng",
                       "frk": "frk", "fraktur": "Fraktur", "script/fraktur": "Fraktur"}
GERMAN_OR_FRAKTUR = frozenset({"deu", "ger", "de", "frk", "fraktur"})


class TesseractEngine:
    """Tesseract 5 through its binary (Debian's tesseract-ocr and language packages).

    Measured on the real Fraktur page of shared/data: the Fraktur script model (Debian's
    tesseract-ocr-script-frak, listed as `Fraktur`) CER 0.098, `frk` 0.109, `deu` 0.145;
    so German and Fraktur scans use it where it is installed."""

    name = "tesseract"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self.binary = shutil.which("tesseract")
        if self.binary is None:
            raise EngineUnavailable("tesseract is not installed (make system-deps installs "
                                    "it with its German and Fraktur data)")
        listed = subprocess.run([self.binary, "--list-langs"], capture_output=True, text=True,
                                check=True, timeout=30).stdout.splitlines()
        self.installed = frozenset(line.strip() for line in listed[1:] if line.strip())
        self.default = str(spec.options.get("languages", "Fraktur+deu"))

    def move(self, device: str) -> None:
        """Tesseract runs on the CPU wherever the replica is."""

    def languages(self, asked: list[str]) -> str:
        if not asked:
            return self.default
        names = []
        for language in asked:
            name = TESSERACT_LANGUAGES.get(language.lower(), language)
            if name not in self.installed:
                raise InvalidInput(f"language {language!r} is not installed for tesseract; "
                                   f"installed: {sorted(self.installed)}",
                                   {"field": "languages"})
            names.append(name)
        return "+".join(dict.fromkeys(names))

    async def recognize(self, image: np.ndarray, options: dict[str, Any]
                        ) -> list[dict[str, Any]]:
        languages = self.languages(options.get("languages") or [])
        return await asyncio.to_thread(self._recognize, image, languages)

    def _recognize(self, image: np.ndarray, languages: str) -> list[dict[str, Any]]:
        import cv2

        _, png = cv2.imencode(".png", image[:, :, ::-1])
        done = subprocess.run([self.binary, "stdin", "stdout", "-l", languages, "--psm", "3",
                               "tsv"], input=png.tobytes(), capture_output=True, timeout=600,
                              check=False)
        if done.returncode != 0:
            raise InvalidInput(f"tesseract failed: {done.stderr.decode(errors='replace')[-300:]}")
        return parse_tsv(done.stdout.decode("utf-8", errors="replace"))


def parse_tsv(tsv: str) -> list[dict[str, Any]]:
    """Tesseract's TSV (one row per page/block/paragraph/line/word) into lines."""
    lines: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12:
            continue
        level, block, par, line = cells[0], cells[2], cells[3], cells[4]
        left, top, width, height = (float(c) for c in cells[6:10])
        key = (block, par, line)
        if level == "4":
            lines[key] = {"words": [], "bbox": (left, top, left + width, top + height)}
        elif level == "5" and key in lines and cells[11].strip():
            lines[key]["words"].append({
                "text": cells[11].strip(), "bbox": (left, top, left + width, top + height),
                "confidence": round(min(max(float(cells[10]), 0.0), 100.0) / 100, 4)})
    return [{"text": " ".join(word["text"] for word in line["words"]), "bbox": line["bbox"],
             "polygon": None, "words": line["words"],
             "confidence": round(sum(w["confidence"] for w in line["words"])
                                 / len(line["words"]), 4)}
            for line in lines.values() if line["words"]]


ENGINES: dict[str, type[OcrEngine]] = {
    "rapidocr": RapidOcrEngine, "llm": OllamaVlmEngine, "tesseract": TesseractEngine,
    "kraken": KrakenRecognitionEngine, "surya": SuryaEngine}


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
                 residency: DeploymentHandle | None = None, extra: tuple[ModelSpec, ...] = ()):
        specs = (spec, *extra)
        for each in specs:
            resolve_weights(each, settings)  # fail the start if configured weights are missing
        self.default_engine = ENGINES[spec.engine].name
        # The LLM's keep_alive under the current residency profile; until the controller
        # answers (or without one), the profile the service started with.
        self.keep_alive = ControllerAnswer(
            "the LLM's keep_alive", residency.keep_alive.remote if residency else None,
            calculate_ocr_residency(load_profile(settings.residency_profile)),
            settings.residency_poll_s)
        self.start(spec, settings, residency, lambda device: EngineSet(specs, settings, device))

    async def __del__(self) -> None:
        for engine in self.engine.by_name.values():
            if hasattr(engine, "close"):
                await engine.close()

    def choose(self, engine: str, languages: list[str]) -> OcrEngine:
        """auto: tesseract for German or Fraktur where it is installed, else the default."""
        if engine == "auto":
            german = {language.lower() for language in languages} & GERMAN_OR_FRAKTUR
            engine = "tesseract" if german and "tesseract" in self.engine.by_name else (
                self.default_engine)
        chosen = self.engine.by_name.get(engine)
        if chosen is None:
            why = self.engine.unavailable.get(engine, "it is not deployed here")
            raise InvalidInput(f"OCR engine {engine!r} is not available: {why}",
                               {"field": "engine", "available": self.engines()})
        return chosen

    async def recognize(self, image: np.ndarray, engine: str, options: dict[str, Any]
                        ) -> tuple[str, list[dict[str, Any]]]:
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
