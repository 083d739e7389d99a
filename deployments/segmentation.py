"""Segmentation deployment: kraken blla baselines, line polygons and regions per page."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.geometry import bbox_of
from deployments.models import ModelSpec, resolve_weights
from deployments.replica import ModelReplica
from serve_app.settings import Settings


def _points(points: Any) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points or []]


class KrakenBllaEngine:
    """kraken 7's SegmentationTaskModel with blla (bundled, or BLLA_MODEL_PATH)."""

    name = "kraken-blla"

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

    def segment(self, image: np.ndarray) -> dict[str, Any]:
        from PIL import Image

        with self._lock:
            seg = self._model.predict(Image.fromarray(image), self._config)
        regions = [
            {"id": region.id, "type": region_type, "boundary": _points(region.boundary)}
            for region_type, items in (seg.regions or {}).items()
            for region in items
        ]
        lines = []
        for line in seg.lines or []:
            boundary = _points(line.boundary)
            lines.append({
                "baseline": _points(line.baseline),
                "boundary": boundary,
                "bbox": bbox_of(boundary),
                "region": (line.regions or [None])[0],
            })
        return {"lines": lines, "regions": regions}


ENGINES: dict[str, type[KrakenBllaEngine]] = {"kraken-blla": KrakenBllaEngine}


@serve.deployment(name="Segmentation", max_ongoing_requests=4, health_check_period_s=10)
class Segmentation(ModelReplica):
    """Baseline segmentation of page images."""

    deployment_name = "Segmentation"

    def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None):
        self.start(spec, settings, residency,
                   lambda device: ENGINES[spec.engine](spec, settings, device))

    async def segment(self, image: np.ndarray) -> dict[str, Any]:
        await self.follower.ensure()
        return await asyncio.to_thread(self.engine.segment, image)
