"""kraken recognition: the text of the baseline lines the Segmentation deployment found.

Handwriting needs a model trained on the archive's own hands; kraken ships none, so
the model comes from the model store (MODEL_CACHE_DIR), where training puts its models
too. The ingress segments a page first and hands the lines over with the image.
"""

from __future__ import annotations

import re
import threading
from statistics import fmean
from typing import Any, ClassVar

import numpy as np

from deployments.engines.ocr.base import EngineUnavailable
from deployments.model_thread import run_on_model_thread
from deployments.models import ModelSpec, required_weights, resolve_weights
from serve_app.kernel.errors import InvalidInput
from serve_app.kernel.geometry import bbox_of
from serve_app.kernel.pages import BaselineLine, Line, Word
from serve_app.kernel.settings import Settings


class KrakenRecognitionEngine:
    """kraken 7's RecognitionTaskModel on given baselines and boundary polygons."""

    name: ClassVar[str] = "kraken"
    reads_baselines: ClassVar[bool] = True

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        # Checked before kraken is imported: 6 s of a replica's start on 2 cores, which an
        # OCR replica without a trained model yet (a fresh install) need not pay.
        if spec.trained and resolve_weights(spec, settings) is None:
            raise EngineUnavailable(
                f"no version of the trained model {spec.trained!r} is active yet: train one "
                f"(POST /v1/train) and activate it (POST /v1/models/{spec.trained}/activate)")
        from kraken.configs import RecognitionInferenceConfig
        from kraken.tasks import RecognitionTaskModel

        self._model = RecognitionTaskModel.load_model(required_weights(spec, settings))
        # Line images are cut out in this thread: worker processes inside a replica
        # would compete with Ray for the replica's CPUs.
        self._config = RecognitionInferenceConfig(**{"num_line_workers": 0, **spec.options})
        self._lock = threading.Lock()  # the task model keeps per-call state
        self.move(device)

    def move(self, device: str) -> None:
        """kraken moves its net to the configured accelerator on each call."""
        with self._lock:
            self._config.accelerator = "gpu" if device == "cuda" else "cpu"

    async def recognize(self, image: np.ndarray, options: dict[str, Any]) -> list[Line]:
        lines = options.get("segmentation")
        if lines is None:
            raise InvalidInput("engine kraken recognises segmented lines: send the page "
                               "through /v1/ocr, which segments it first")
        return await run_on_model_thread(self._recognize, image, lines)

    def _recognize(self, image: np.ndarray, lines: list[BaselineLine]) -> list[Line]:
        from kraken.containers import BaselineLine, Segmentation
        from PIL import Image

        usable = [line for line in lines
                  if len(line["baseline"]) >= 2 and len(line["boundary"]) >= 3]
        if not usable:
            return []
        segmentation = Segmentation(
            type="baselines", imagename="page", text_direction="horizontal-lr",
            script_detection=False,
            lines=[BaselineLine(id=f"line_{index}", baseline=_ints(line["baseline"]),
                                boundary=_ints(line["boundary"]),
                                regions=[line["region"]] if line.get("region") else None)
                   for index, line in enumerate(usable)])
        if self._model.seg_type == "bbox":  # a model trained on boxes, as older ones are
            segmentation = segmentation.to_bbox()
        with self._lock:
            records = {record.id: record for record in self._model.predict(
                Image.fromarray(image), segmentation, self._config)}
        result = []
        for index, line in enumerate(usable):
            record = records.get(f"line_{index}")
            if record is None:
                continue
            confidences = [float(c) for c in record.confidences or []]
            result.append(Line(
                text=record.prediction,
                bbox=line["bbox"],
                polygon=line["boundary"],
                baseline=line["baseline"],
                region=line.get("region"),
                confidence=round(fmean(confidences), 4) if confidences else None,
                words=words_from_cuts(record.prediction, list(record.cuts or []), confidences),
            ))
        return result


def words_from_cuts(text: str, cuts: list[Any], confidences: list[float]) -> list[Word] | None:
    """Word boxes from kraken's per-character cut polygons; None where they do not line
    up with the text (then the formats place words along the line)."""
    if not text.strip() or len(cuts) != len(text) or len(confidences) != len(text):
        return None
    words = []
    for match in re.finditer(r"\S+", text):
        points = [point for cut in cuts[match.start():match.end()] for point in cut]
        words.append(Word(text=match.group(), bbox=bbox_of(points),
                          confidence=round(fmean(confidences[match.start():match.end()]), 4)))
    return words


def _ints(points: list[Any]) -> list[tuple[int, int]]:
    return [(round(x), round(y)) for x, y in points]
