"""Residency: the polling state machine and the controller deployment.

`Residency` is plain Python (monitor + replica reports -> policy per GPU -> placements),
so bench/residency_sim.py drives the very object the ResidencyController runs. Each model
replica reports what it holds every poll (deployments/replica.py) and moves itself to the
placement the controller answers, whether or not requests arrive. Our VRAM is what the
replicas report holding (and NVML sees), never what the controller decided: a replica
told to leave counts as holding its memory until its own move has run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from ray import serve

from deployments.residency.monitors import (
    FAKE_GPU,
    FakeGpuMonitor,
    GpuSnapshot,
    ProcessUsage,
    VramMonitor,
    node_ollama_url,
    open_monitor,
    with_our_usage,
)
from deployments.residency.policy import (
    Decision,
    Device,
    KeepAlive,
    ResidencyState,
    decide,
    initial_state,
    keep_alive,
)
from deployments.residency.profiles import Profile, load_profile
from serve_app.kernel.settings import Settings

logger = logging.getLogger("ray.serve")
HISTORY = 100  # decisions kept for /v1/capacity
STALE_POLLS = 5  # a replica silent this many polls is gone (restarted, scaled down)
OURS = "ocr-graph"  # the process name our replicas' memory is shown under


@dataclass(frozen=True)
class ReplicaReport:
    """What one model replica says it holds, sent every poll."""

    replica: str
    deployment: str
    gpu: str | None  # "<node id>:<GPU index>" of the GPU Ray gave it; None without one
    device: Literal["cuda", "cpu"]  # where its weights are (cuda on a simulated GPU too)
    held_mb: int  # what it holds on that GPU
    at: float
    snapshot: GpuSnapshot | None = None  # NVML of its own GPU, where it can read it


def gpu_key(node: str, index: int | str) -> str:
    return f"{node}:{index}"


class Residency:
    """Reads VRAM, runs the policy for each GPU, keeps replica reports and decisions."""

    def __init__(self, profile: Profile, footprints: dict[str, int], gpu: bool, now: float,
                 monitor: VramMonitor | None = None, node: str = "local"):
        self.profile = profile
        self.footprints = footprints  # deployments with a GPU share: footprint MB
        self.gpu = gpu
        self.node = node  # the controller's node: its monitor's GPUs live there
        self.monitor = monitor
        self.started = now
        self.states: dict[str, ResidencyState] = {}
        self.reports: dict[str, ReplicaReport] = {}
        self.snapshots: dict[str, GpuSnapshot] = {}
        self.history: list[Decision] = []
        self.keep_alive = keep_alive(profile, None)
        self.polls = 0
        self.poll_s = 1.0

    # ---- what replicas say -------------------------------------------------------------

    def report(self, report: ReplicaReport) -> None:
        self.reports[report.replica] = report

    def live_reports(self, now: float) -> list[ReplicaReport]:
        horizon = now - STALE_POLLS * self.poll_s
        for replica in [r for r, report in self.reports.items() if report.at < horizon]:
            del self.reports[replica]
        return list(self.reports.values())

    def held_mb(self, key: str | None = None) -> int:
        """What our replicas report holding on one GPU (every GPU when key is None)."""
        return sum(r.held_mb for r in self.reports.values()
                   if r.device == "cuda" and (key is None or r.gpu == key))

    # ---- deciding ------------------------------------------------------------------------

    def _footprints_on(self, key: str, reports: list[ReplicaReport]) -> dict[str, int]:
        """The deployments with a replica on this GPU (before any report: all of them, on
        the controller's own node)."""
        here = {r.deployment for r in reports if r.gpu == key and r.deployment in self.footprints}
        if not here and key.startswith(self.node + ":") and not reports:
            here = set(self.footprints)
        return {name: self.footprints[name] for name in sorted(here)}

    def poll(self, now: float) -> list[Decision]:
        """One look at every GPU and one policy step for each; the decisions made."""
        assert self.monitor is not None
        reports = self.live_reports(now)
        seen = {gpu_key(self.node, gpu.index): gpu for gpu in self.monitor.snapshot()}
        for report in reports:  # GPUs of other nodes, as their replicas read them
            if report.snapshot is not None and report.gpu and report.gpu not in seen:
                seen[report.gpu] = report.snapshot if report.snapshot.name != FAKE_GPU else (
                    with_our_usage(report.snapshot, self.held_mb(report.gpu)))
        self.snapshots = seen
        made: list[Decision] = []
        keys = set(seen) | {r.gpu for r in reports if r.gpu} | set(self.states)
        for key in sorted(keys):
            footprints = self._footprints_on(key, reports)
            state = self.states.get(key) or initial_state({}, now, self.gpu)
            arrived = {n: mb for n, mb in footprints.items() if n not in state.placements}
            if arrived:  # replicas seen on this GPU for the first time start where Ray put them
                state = replace(state, placements={
                    **state.placements, **initial_state(arrived, now, self.gpu).placements})
            snapshot = seen.get(key)
            releasing = sum(r.held_mb for r in reports if r.gpu == key and r.device == "cuda"
                            and state.placements.get(r.deployment) is not None
                            and state.placements[r.deployment].device == "cpu")
            before = len(state.history)
            state = decide(snapshot.free_mb if snapshot else None, self.profile, footprints,
                           state, now, releasing)
            made += state.history[before:]
            self.states[key] = replace(state, history=())
        self.history = (self.history + made)[-HISTORY:]
        llm_gpu = max(seen.values(), key=lambda g: g.llm_used_mb, default=None)
        self.keep_alive = keep_alive(self.profile, llm_gpu.free_mb if llm_gpu else None)
        self.polls += 1
        return made

    def placement(self, deployment: str, key: str | None = None) -> Device:
        """Where a deployment's replica on GPU `key` belongs (no GPU: the CPU). Before the
        first poll, where the builder put it."""
        if key is None or deployment not in self.footprints:
            return "cpu"
        state = self.states.get(key)
        if state is None or deployment not in state.placements:
            return "gpu" if self.gpu else "cpu"
        return state.placements[deployment].device

    # ---- what /v1/capacity shows -----------------------------------------------------------

    def capacity(self) -> dict[str, Any]:
        gpus = []
        for key, snapshot in sorted(self.snapshots.items()):
            body = snapshot.as_dict()
            body["key"] = key
            body["placements"] = {name: asdict(p) for name, p in
                                  self.states.get(key, initial_state({}, 0, False))
                                  .placements.items()}
            gpus.append(body)
        first = gpus[0]["placements"] if gpus else {
            name: asdict(p) for state in self.states.values() for name, p in
            state.placements.items()}
        return {
            "gpu_available": bool(gpus),
            "note": None if gpus else "no GPU visible to NVML on the controller's node",
            "gpus": gpus,
            "profile": self.profile.name,
            "llm_reserved_mb": self.profile.llm_reserved_mb,
            "llm_keep_alive": asdict(self.keep_alive),
            "polls": self.polls,
            "placements": first,
            "replicas": [asdict(replace(r, snapshot=None)) for r in self.reports.values()],
            "decisions": [asdict(d) for d in reversed(self.history)],
        }


class ReportedUsage:
    """Our usage for a simulated GPU: what the replicas report holding on it."""

    def __init__(self, residency: Residency, key: str):
        self.residency, self.key = residency, key

    def __call__(self) -> int:
        return self.residency.held_mb(self.key)


def with_our_process(snapshot: GpuSnapshot, ours_mb: int) -> GpuSnapshot:
    """NVML lists processes by pid; our replicas are shown together as `ocr-graph`."""
    processes = [p for p in snapshot.processes if p.name != OURS]
    return replace(snapshot, processes=[*processes, ProcessUsage(0, OURS, ours_mb)])


class _Metrics:
    """The capacity figures as Ray Serve metrics, for the dashboard and Prometheus."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Gauge

        self.total = Gauge("ocr_graph_vram_total_mb", "VRAM of each GPU (MB).",
                           tag_keys=("gpu",))
        self.free = Gauge("ocr_graph_vram_free_mb", "Free VRAM per GPU (MB).", tag_keys=("gpu",))
        self.llm = Gauge("ocr_graph_vram_llm_mb", "VRAM held by the LLM per GPU (MB).",
                         tag_keys=("gpu",))
        self.ours = Gauge("ocr_graph_vram_ours_mb", "VRAM our replicas report holding (MB).",
                          tag_keys=("gpu",))
        self.on_gpu = Gauge("ocr_graph_model_on_gpu", "1 when the model is placed on the GPU.",
                            tag_keys=("model_deployment", "gpu"))
        self.moves = Counter("ocr_graph_residency_moves", "Model moves by target device.",
                             tag_keys=("model_deployment", "device"))

    def record(self, residency: Residency, made: list[Decision]) -> None:
        for key, gpu in residency.snapshots.items():
            self.total.set(gpu.total_mb, tags={"gpu": key})
            self.free.set(gpu.free_mb, tags={"gpu": key})
            self.llm.set(gpu.llm_used_mb, tags={"gpu": key})
            self.ours.set(residency.held_mb(key), tags={"gpu": key})
        for key, state in residency.states.items():
            for name, placement in state.placements.items():
                self.on_gpu.set(1 if placement.device == "gpu" else 0,
                                tags={"model_deployment": name, "gpu": key})
        for decision in made:
            self.moves.inc(tags={"model_deployment": decision.deployment,
                                 "device": decision.device})


@serve.deployment(name="ResidencyController", num_replicas=1, max_ongoing_requests=256)
class ResidencyController:
    """Singleton: polls VRAM, takes the replicas' reports, runs the policy per GPU, answers
    placements and keep_alive, and /v1/capacity.

    Without NVML and with VRAM_FAKE_TOTAL_MB set (tests, rehearsals) the GPU is a fake of
    that size: the LLM's share comes from Ollama's /api/ps, ours from what the replicas
    report holding on it."""

    async def __init__(self, profile: Profile, footprints: dict[str, int], gpu: bool,
                       settings: Settings):
        import ray

        self.poll_s = settings.residency_poll_s
        node = ray.get_runtime_context().get_node_id()
        self.residency = Residency(profile, footprints, gpu, time.monotonic(), node=node)
        self.residency.poll_s = self.poll_s
        self.residency.monitor = (
            FakeGpuMonitor(settings.vram_fake_total_mb, node_ollama_url(settings.ollama_url),
                           ReportedUsage(self.residency, gpu_key(node, 0)))
            if settings.vram_fake_total_mb else open_monitor(settings.llm_processes)
        )
        self.metrics = _Metrics()
        self.poll_once()
        self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    def poll_once(self) -> None:
        made = self.residency.poll(time.monotonic())
        self.residency.snapshots = {
            key: with_our_process(gpu, self.residency.held_mb(key))
            for key, gpu in self.residency.snapshots.items()}
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

    def follow(self, report: ReplicaReport) -> Device:
        """A replica's poll: it reports what it holds and learns where it belongs."""
        self.residency.report(replace(report, at=time.monotonic()))
        return self.residency.placement(report.deployment, report.gpu)

    def placement(self, deployment: str, key: str | None = None) -> Device:
        return self.residency.placement(deployment, key)

    def keep_alive(self) -> dict[str, str]:
        """keep_alive for the llm OCR engine: {"busy", "idle", "reason"}."""
        return asdict(self.residency.keep_alive)

    def capacity(self) -> dict[str, Any]:
        return self.residency.capacity()


__all__ = ["KeepAlive", "ReplicaReport", "Residency", "ResidencyController"]
