"""kraken blla: baselines, line boundary polygons and regions of a page."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np

from deployments.models import ModelSpec, resolve_weights
from serve_app.kernel.geometry import bbox_of
from serve_app.kernel.pages import BaselineLine, Point, Region, Segmentation
from serve_app.kernel.settings import Settings


def _points(points: Any) -> list[Point]:
    return [(float(x), float(y)) for x, y in points or []]


class KrakenBllaEngine:
    """kraken 7's SegmentationTaskModel with blla (bundled, or BLLA_MODEL_PATH)."""

    name: ClassVar[str] = "kraken-blla"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        from kraken.configs import SegmentationInferenceConfig
        from kraken.tasks import SegmentationTaskModel

        weights = resolve_weights(spec, settings)
        self._model = SegmentationTaskModel.load_model(weights)
        self._config = SegmentationInferenceConfig(**spec.options)
        self._lock = threading.Lock()  # the task model keeps per-call state
        self.move(device)

    def move(self, device: str) -> None:
        """kraken moves its nets to the configured accelerator before each page."""
        with self._lock:
            self._config.accelerator = "gpu" if device == "cuda" else "cpu"

    def segment(self, image: np.ndarray) -> Segmentation:
        from PIL import Image

        with self._lock:
            seg = self._model.predict(Image.fromarray(image), self._config)
        regions = [
            Region(id=region.id, type=region_type, boundary=_points(region.boundary))
            for region_type, items in (seg.regions or {}).items()
            for region in items
        ]
        lines = []
        for line in seg.lines or []:
            boundary = _points(line.boundary)
            lines.append(BaselineLine(baseline=_points(line.baseline), boundary=boundary,
                                      bbox=bbox_of(boundary),
                                      region=(line.regions or [None])[0]))
        return Segmentation(lines=lines, regions=regions)
