"""Segmentation deployment: kraken blla baselines, line polygons and regions per page."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.engines.segmentation import ENGINES
from deployments.models import ModelSpec
from deployments.replica import ModelReplica
from serve_app.kernel.pages import Segmentation as PageSegmentation
from serve_app.kernel.settings import Settings


@serve.deployment(name="Segmentation", max_ongoing_requests=4, health_check_period_s=10)
class Segmentation(ModelReplica):
    """Baseline segmentation of page images."""

    deployment_name = "Segmentation"

    def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None):
        self.start(spec, settings, residency,
                   lambda device: ENGINES[spec.engine](spec, settings, device))

    async def segment(self, image: np.ndarray) -> PageSegmentation:
        await self.follower.ensure()
        return await asyncio.to_thread(self.engine.segment, image)
