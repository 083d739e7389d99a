"""Tesseract 5 through its binary (Debian's tesseract-ocr and language packages).

Measured on the real Fraktur page of the test data: the Fraktur script model (Debian's
tesseract-ocr-script-frak, listed as `Fraktur`) CER 0.098, `frk` 0.109, `deu` 0.145;
so German and Fraktur scans use it where it is installed."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from typing import Any, ClassVar

import numpy as np

from deployments.engines.ocr.base import EngineUnavailable
from deployments.models import ModelSpec
from serve_app.kernel.errors import InvalidInput, UpstreamTimeout
from serve_app.kernel.pages import Line, Word
from serve_app.kernel.settings import Settings

# One OpenMP thread per tesseract process: the service runs pages (and the ensemble its
# voters) side by side, and tesseract's own threads spinning against each other made a
# page 5x slower on 2 cores (8.5 s against 1.7 s, the same text; bench/ocr_quality.py).
TESSERACT_ENV = {"OMP_THREAD_LIMIT": "1"}
# What request languages mean to Tesseract (`tesseract --list-langs` names).
TESSERACT_LANGUAGES = {"deu": "deu", "ger": "deu", "de": "deu", "eng": "eng", "en": "eng",
                       "frk": "frk", "fraktur": "Fraktur", "script/fraktur": "Fraktur"}


class TesseractEngine:
    """One `tesseract stdin stdout tsv` process per page."""

    name: ClassVar[str] = "tesseract"
    reads_baselines: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self.binary = shutil.which("tesseract")
        if self.binary is None:
            raise EngineUnavailable("tesseract is not installed (make system-deps installs "
                                    "it with its German and Fraktur data)")
        listed = subprocess.run([self.binary, "--list-langs"], capture_output=True, text=True,
                                check=True, timeout=30).stdout.splitlines()
        self.installed = frozenset(line.strip() for line in listed[1:] if line.strip())
        self.default = str(spec.options.get("languages", "Fraktur+deu"))
        self.deadline_s = settings.call_timeout_s

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

    async def recognize(self, image: np.ndarray, options: dict[str, Any]) -> list[Line]:
        languages = self.languages(options.get("languages") or [])
        # The page's own DPI: tesseract sizes its expectations of glyphs by it.
        resolution = ["--dpi", str(options["dpi"])] if options.get("dpi") else []
        done = await self.run(["-l", languages, "--psm", "3", *resolution, "tsv"], image)
        return parse_tsv(done.decode("utf-8", errors="replace"))

    async def script(self, image: np.ndarray) -> tuple[str, float]:
        """tesseract's script detection (OSD) on the page: (script, confidence); ("unknown",
        0.0) where it finds too little text to say."""
        if "osd" not in self.installed:
            return "unknown", 0.0
        try:
            done = await self.run(["--psm", "0"], image)
        except InvalidInput:  # too little text to detect anything: not an error of the page
            return "unknown", 0.0
        return parse_osd(done.decode("utf-8", errors="replace"))

    async def run(self, args: list[str], image: np.ndarray) -> bytes:
        """tesseract on the page as PNG through stdin: its stdout. Killed when its deadline
        (DEPLOYMENT_CALL_TIMEOUT_S) passes (504) or the request is cancelled."""
        import cv2

        _, png = await asyncio.to_thread(cv2.imencode, ".png", image[:, :, ::-1])
        process = await asyncio.create_subprocess_exec(
            self.binary, "stdin", "stdout", *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **TESSERACT_ENV})
        try:
            out, err = await asyncio.wait_for(process.communicate(png.tobytes()),
                                              self.deadline_s)
        except TimeoutError:
            raise UpstreamTimeout(f"tesseract did not finish the page within "
                                  f"{self.deadline_s:g} s (DEPLOYMENT_CALL_TIMEOUT_S)",
                                  {"deadline_s": self.deadline_s}) from None
        finally:
            if process.returncode is None:  # deadline or cancelled request: stop its work
                process.kill()
                await asyncio.shield(process.wait())
        if process.returncode != 0:
            raise InvalidInput(f"tesseract failed: {err.decode(errors='replace')[-300:]}")
        return out


def parse_osd(text: str) -> tuple[str, float]:
    """(script, confidence) from tesseract's --psm 0 report."""
    script = re.search(r"^Script: (\S+)", text, re.M)
    confidence = re.search(r"^Script confidence: ([0-9.]+)", text, re.M)
    if not script or not confidence:
        return "unknown", 0.0
    return script.group(1), float(confidence.group(1))


def parse_tsv(tsv: str) -> list[Line]:
    """Tesseract's TSV (one row per page/block/paragraph/line/word) into lines."""
    boxes: dict[tuple[str, str, str], tuple[float, float, float, float]] = {}
    words: dict[tuple[str, str, str], list[Word]] = {}
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12:
            continue
        level, block, par, line = cells[0], cells[2], cells[3], cells[4]
        left, top, width, height = (float(c) for c in cells[6:10])
        key = (block, par, line)
        if level == "4":
            boxes[key], words[key] = (left, top, left + width, top + height), []
        elif level == "5" and key in boxes and cells[11].strip():
            words[key].append(Word(
                text=cells[11].strip(), bbox=(left, top, left + width, top + height),
                confidence=round(min(max(float(cells[10]), 0.0), 100.0) / 100, 4)))
    return [Line(text=" ".join(word["text"] for word in found), bbox=boxes[key], polygon=None,
                 words=found,
                 confidence=round(sum(w.get("confidence") or 0.0 for w in found)
                                  / len(found), 4))
            for key, found in words.items() if found]
