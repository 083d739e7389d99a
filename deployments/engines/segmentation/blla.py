"""kraken blla: baselines, line boundary polygons and regions of a page."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from deployments.engines.segmentation import ridges
from deployments.models import ModelSpec, resolve_weights
from serve_app.kernel.geometry import bbox_of
from serve_app.kernel.pages import BaselineLine, Point, Region, Segmentation
from serve_app.kernel.settings import Settings

logger = logging.getLogger("ray.serve")
INCOMPATIBLE = ".incompatible"


def load_errors() -> tuple[type[BaseException], ...]:
    """What kraken's model loading raises for a file it cannot use: its loaders' ValueError
    ("No loader found", "No segmentation models"), its own invalid-model error, and OSError
    for a file that cannot be read."""
    from kraken.lib.exceptions import KrakenInvalidModelException

    return (ValueError, OSError, KrakenInvalidModelException)


def load_or_set_aside(path: Path | None) -> Any:
    """The segmentation model at `path`; a file that is there but does not load is renamed
    NAME.incompatible (so no later start trips over it) and the bundled blla is used."""
    from kraken.tasks import SegmentationTaskModel

    if path is not None:
        try:
            return SegmentationTaskModel.load_model(path)
        except load_errors() as exc:
            aside = path.with_name(path.name + INCOMPATIBLE)
            path.replace(aside)
            logger.warning("segmentation model %s cannot be loaded (%s: %s); renamed to %s, "
                           "using kraken's bundled blla", path, type(exc).__name__,
                           str(exc).splitlines()[0][:200], aside.name)
    return SegmentationTaskModel.load_model(None)


def _points(points: Any) -> list[Point]:
    return [(float(x), float(y)) for x, y in points or []]


class KrakenBllaEngine:
    """kraken 7's SegmentationTaskModel with blla (bundled, or BLLA_MODEL_PATH)."""

    name: ClassVar[str] = "kraken-blla"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        import torch
        from kraken.configs import SegmentationInferenceConfig

        self._model = load_or_set_aside(resolve_weights(spec, settings))
        # The ridge filter gets the cores torch has (OMP_NUM_THREADS): kraken runs it on one.
        ridges.install(torch.get_num_threads())
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
