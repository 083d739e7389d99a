"""Residency: the polling state machine and the controller deployment.

`Residency` is plain Python (monitor -> policy -> placements), so bench/residency_sim.py
drives the very object the ResidencyController deployment runs. Model replicas ask the
controller where they belong (deployments/replica.py) and move themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, replace
from typing import Any

from ray import serve

from deployments.residency.monitors import FakeGpuMonitor, GpuSnapshot, VramMonitor, open_monitor
from deployments.residency.policy import Decision, Device, ResidencyState, decide, initial_state
from deployments.residency.profiles import Profile, load_profile
from serve_app.kernel.settings import Settings

logger = logging.getLogger("ray.serve")
HISTORY = 100  # decisions kept for /v1/capacity


class Residency:
    """Reads VRAM, runs the policy, remembers placements and decisions."""

    def __init__(self, profile: Profile, footprints: dict[str, int], gpu: bool, now: float,
                 monitor: VramMonitor | None = None):
        self.profile = profile
        self.footprints = footprints
        self.state: ResidencyState = initial_state(footprints, now, gpu)
        self.monitor = monitor
        self.snapshot: list[GpuSnapshot] = []
        self.polls = 0

    def resident_mb(self) -> int:
        """What our models hold on the GPU now, by their footprints."""
        return sum(self.footprints[name] for name, placement in self.state.placements.items()
                   if placement.device == "gpu")

    def poll(self, now: float) -> list[Decision]:
        """One look at the GPU and one policy step; the decisions it made."""
        assert self.monitor is not None
        self.snapshot = self.monitor.snapshot()
        free = min(gpu.free_mb for gpu in self.snapshot) if self.snapshot else None
        before = len(self.state.history)
        self.state = decide(free, self.profile, self.footprints, self.state, now)
        made = list(self.state.history[before:])
        self.state = replace(self.state, history=self.state.history[-HISTORY:])
        self.polls += 1
        return made

    def placement(self, deployment: str) -> Device:
        placement = self.state.placements.get(deployment)
        return placement.device if placement else "cpu"

    def capacity(self) -> dict[str, Any]:
        gpus = [gpu.as_dict() for gpu in self.snapshot]
        return {
            "gpu_available": bool(gpus),
            "note": None if gpus else "no GPU visible to NVML on the controller's node",
            "gpus": gpus,
            "profile": self.profile.name,
            "llm_reserved_mb": self.profile.llm_reserved_mb,
            "llm_keep_alive": self.profile.llm_keep_alive,
            "polls": self.polls,
            "placements": {name: asdict(p) for name, p in self.state.placements.items()},
            "decisions": [asdict(d) for d in reversed(self.state.history)],
        }


class _Metrics:
    """The capacity figures as Ray Serve metrics, for the dashboard and Prometheus."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Gauge

        self.free = Gauge("ocr_graph_vram_free_mb", "Free VRAM per GPU (MB).", tag_keys=("gpu",))
        self.llm = Gauge("ocr_graph_vram_llm_mb", "VRAM held by the LLM per GPU (MB).",
                         tag_keys=("gpu",))
        self.on_gpu = Gauge("ocr_graph_model_on_gpu", "1 when the model is placed on the GPU.",
                            tag_keys=("model_deployment",))
        self.moves = Counter("ocr_graph_residency_moves", "Model moves by target device.",
                             tag_keys=("model_deployment", "device"))

    def record(self, residency: Residency, made: list[Decision]) -> None:
        for gpu in residency.snapshot:
            self.free.set(gpu.free_mb, tags={"gpu": str(gpu.index)})
            self.llm.set(gpu.llm_used_mb, tags={"gpu": str(gpu.index)})
        for name, placement in residency.state.placements.items():
            self.on_gpu.set(1 if placement.device == "gpu" else 0,
                            tags={"model_deployment": name})
        for decision in made:
            self.moves.inc(tags={"model_deployment": decision.deployment,
                                 "device": decision.device})


@serve.deployment(name="ResidencyController", num_replicas=1, max_ongoing_requests=256)
class ResidencyController:
    """Singleton: polls the VRAM monitor, runs the policy, answers replicas and /v1/capacity.

    Without NVML and with VRAM_FAKE_TOTAL_MB set (tests, demos) the GPU is a fake of that
    size whose LLM share comes from Ollama's /api/ps."""

    async def __init__(self, profile: Profile, footprints: dict[str, int], gpu: bool,
                       settings: Settings):
        self.poll_s = settings.residency_poll_s
        self.residency = Residency(profile, footprints, gpu, time.monotonic())
        self.residency.monitor = (
            FakeGpuMonitor(settings.vram_fake_total_mb, settings.ollama_url,
                           self.residency.resident_mb)
            if settings.vram_fake_total_mb else open_monitor(settings.llm_processes)
        )
        self.metrics = _Metrics()
        self.poll_once()
        self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    def poll_once(self) -> None:
        made = self.residency.poll(time.monotonic())
        self.metrics.record(self.residency, made)
        for decision in made:
            logger.info("residency: %s -> %s (%s)", decision.deployment, decision.device,
                        decision.reason)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)  # the polling period
            try:
                await asyncio.to_thread(self.poll_once)
            except Exception:  # a failed poll must not end polling; the next one retries
                logger.exception("residency poll failed")

    def reconfigure(self, config: dict[str, Any]) -> None:
        """user_config {"profile": NAME} switches profiles without redeploying models."""
        if "profile" in config:
            self.residency.profile = load_profile(str(config["profile"]))
            logger.info("residency profile switched to %s", config["profile"])

    def placement(self, deployment: str) -> Device:
        return self.residency.placement(deployment)

    def keep_alive(self) -> str:
        """What the LLM OCR engine sends Ollama as keep_alive under the current profile."""
        return self.residency.profile.llm_keep_alive

    def capacity(self) -> dict[str, Any]:
        return self.residency.capacity()
