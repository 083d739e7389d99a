"""Segmentation deployment: kraken blla baselines, line polygons and regions per page."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.engines.segmentation import ENGINES
from deployments.model_thread import run_on_model_thread
from deployments.models import ModelSpec
from deployments.replica import ModelReplica
from serve_app.kernel.pages import Segmentation as PageSegmentation
from serve_app.kernel.settings import Settings


# Bounded queue: a blla page takes seconds on a CPU; 20 pages waiting is the most an
# accepted request should queue behind.
@serve.deployment(name="Segmentation", max_ongoing_requests=4, max_queued_requests=16,
                  health_check_period_s=10)
class Segmentation(ModelReplica):
    """Baseline segmentation of page images."""

    deployment_name = "Segmentation"
    # glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so
    # page images and ridge-filter arrays stay in its heaps: over 30 pages this replica
    # grew 1345 -> 1675 MB, swinging by 400 MB in a soak. Fixed at 4 MB, larger blocks
    # are mapped and unmapped: flat at 1,096 MB, each page 5% slower or within the noise.
    # Not for the Embedding: its activations then cost page faults on every forward
    # (0.70 of infinity at 32 clients, from 1.07).
    process_env: ClassVar[dict[str, str]] = {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**20)}

    async def __init__(self, spec: ModelSpec, settings: Settings,
                 residency: DeploymentHandle | None = None):
        self.settings = settings
        self.start(spec, settings, residency,
                   lambda device: ENGINES[spec.engine](spec, settings, device))
        self.follow_trained([spec.trained] if spec.trained else [], settings)
        self.follow_placement()

    def load_trained(self, changes: dict[str, int | None]) -> None:
        """A newly activated version replaces the engine (the bundled blla when none is)."""
        assert self.spec.trained is not None
        version = changes[self.spec.trained]
        found = self.trained.store.version(self.spec.trained, version)
        spec = self.spec.model_copy(update={"trained": None, "path": str(found.path)}) if (
            found) else self.spec
        engine = ENGINES[spec.engine](spec, self.settings, self.device)
        self.engine = engine

    def model_version(self) -> dict[str, Any]:
        """The trained model this replica segments with, or the catalog's."""
        trained = getattr(self, "trained", None)
        version = trained.loaded.get(self.spec.trained) if trained and self.spec.trained else None
        if version is None:
            return {"model": self.spec.name, "model_version": None}
        return {"model": self.spec.trained, "model_version": version}

    async def segment(self, image: np.ndarray) -> dict[str, Any]:
        """The page's lines and regions, and which model found them."""
        await self.sync_trained()
        found: PageSegmentation = await self.follower.run(
            lambda: run_on_model_thread(self.engine.segment, image))
        return {**found, **self.model_version()}

    async def describe(self) -> dict[str, Any]:
        await self.sync_trained()
        version = self.model_version()
        trained = [{"name": version["model"], "version": version["model_version"]}] if (
            version["model_version"] is not None) else None
        return {**super().describe(), "trained_models": trained}
