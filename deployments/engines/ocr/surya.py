"""surya: text detection and recognition in-process, on the OCR replica's GPU share.

surya 0.17 is the newest release that still recognises in-process (0.20 and later
send recognition to a separate VLM server, outside our residency policy). Its
checkpoints come from the model store: MODEL_CACHE_DIR/surya/text_detection and
MODEL_CACHE_DIR/surya/text_recognition, copied there from a connected host; surya's
own download at request time is never reached because local paths are given.
Concurrent pages (the ingress keeps several in flight) are batched into one call.
"""

from __future__ import annotations

import html
import re
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from deployments.batching import WhenFreeBatcher
from deployments.model_thread import run_on_model_thread
from deployments.models import ModelSpec, required_weights
from serve_app.kernel.errors import ModelMissing
from serve_app.kernel.geometry import bbox_of, confidence
from serve_app.kernel.pages import Line
from serve_app.kernel.settings import Settings

FETCH_HINT = (
    "on a connected host run surya once (e.g. `surya_ocr page.png`), then copy "
    "~/.cache/datalab/models/text_detection/<date> to {root}/text_detection and "
    "~/.cache/datalab/models/text_recognition/<date> to {root}/text_recognition")


def checkpoints(spec: ModelSpec, settings: Settings) -> tuple[Path, Path]:
    """The detection and recognition checkpoint directories, or ModelMissing saying how
    to put them there."""
    root = required_weights(spec, settings)
    found = (root / "text_detection", root / "text_recognition")
    for path in found:
        if not (path / "config.json").is_file():
            raise ModelMissing(f"model {spec.name!r}: no surya checkpoint at {path}; "
                               + FETCH_HINT.format(root=root),
                               detail={"model": spec.name, "path": str(path)})
    return found


# surya marks formatting and its own special tokens inline (<b>, <i>, <br>, <EOI>, ...).
_MARKUP = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>")


def plain_text(text: str) -> str:
    """A line's text without surya's inline markup, HTML entities decoded."""
    return html.unescape(_MARKUP.sub("", text)).strip()


def lines_from_result(result: Any) -> list[Line]:
    """surya's OCRResult (text lines in reading order) as our lines; lines it read no
    text in are left out."""
    lines = []
    for line in result.text_lines:
        text = plain_text(line.text)
        if not text:
            continue
        polygon = [(round(float(x), 1), round(float(y), 1)) for x, y in line.polygon]
        lines.append(Line(text=text, bbox=bbox_of(polygon), polygon=polygon,
                          confidence=confidence(line.confidence)))
    return lines


class SuryaEngine:
    """surya's DetectionPredictor + RecognitionPredictor over a FoundationPredictor."""

    name: ClassVar[str] = "surya"
    reads_baselines: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        from surya.detection import DetectionPredictor
        from surya.foundation import FoundationPredictor
        from surya.recognition import RecognitionPredictor

        detection, recognition = checkpoints(spec, settings)
        self.detector = DetectionPredictor(checkpoint=str(detection), device=device)
        self.recognizer = RecognitionPredictor(
            FoundationPredictor(checkpoint=str(recognition), device=device))
        for predictor in (self.detector, self.recognizer):
            predictor.disable_tqdm = True  # progress bars would flood the replica's log
        self.options = dict(spec.options)
        self._lock = threading.Lock()
        # Pages queued while the model reads go together into its next call.
        self._pages = WhenFreeBatcher(self._read_in_thread, max_size=8)

    def move(self, device: str) -> None:
        with self._lock:
            self.detector.to(device)
            self.recognizer.to(device)

    async def recognize(self, image: np.ndarray, options: dict[str, Any]) -> list[Line]:
        return await self._pages(image)

    async def _read_in_thread(self, images: list[np.ndarray]) -> list[list[Line]]:
        return await run_on_model_thread(self.read, images)

    def read(self, images: list[np.ndarray]) -> list[list[Line]]:
        """One detection and one recognition call for all the pages."""
        from PIL import Image

        with self._lock:
            results = self.recognizer([Image.fromarray(image) for image in images],
                                      det_predictor=self.detector, sort_lines=True,
                                      math_mode=False, **self.options)
        return [lines_from_result(result) for result in results]
