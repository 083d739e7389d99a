"""VRAM monitor: what each GPU holds and how much of it is the LLM's.

pynvml reads the real GPUs; where NVML is missing (no driver, a laptop, CI)
the monitor answers "no GPU" instead of failing. Two fakes stand in for NVML where no
GPU exists: ScenarioMonitor replays a timeline file (bench/residency_sim.py), and
FakeGpuMonitor reads the LLM's share from Ollama's real /api/ps (tests, demos).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

logger = logging.getLogger("ray.serve")

DEFAULT_LLM_PROCESS_NAMES = ("ollama", "ollama_llama_server", "llama-server")


@dataclass(frozen=True)
class ProcessUsage:
    pid: int
    name: str
    used_mb: int


@dataclass(frozen=True)
class GpuSnapshot:
    index: int
    name: str
    total_mb: int
    used_mb: int
    free_mb: int
    llm_used_mb: int
    processes: list[ProcessUsage] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VramMonitor(Protocol):
    def snapshot(self) -> list[GpuSnapshot]: ...


class NoGpuMonitor:
    """Answers for hosts without NVML: there is no GPU to share."""

    def snapshot(self) -> list[GpuSnapshot]:
        return []


class NvmlMonitor:
    """pynvml backend; raises at construction where there is no NVIDIA driver.

    A process is the LLM's when its name starts with one of `llm_names` (ollama's
    runners by default) or its pid is in `llm_pids` (a container whose names differ)."""

    def __init__(self, llm_names: tuple[str, ...] = DEFAULT_LLM_PROCESS_NAMES,
                 llm_pids: frozenset[int] = frozenset()):
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.llm_names = tuple(name.lower() for name in llm_names)
        self.llm_pids = llm_pids

    def _is_llm(self, process: ProcessUsage) -> bool:
        return process.pid in self.llm_pids or process.name.lower().startswith(self.llm_names)

    def snapshot(self) -> list[GpuSnapshot]:
        import psutil

        nvml, gpus = self.nvml, []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            processes = []
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                try:
                    name = psutil.Process(proc.pid).name()
                except (psutil.Error, OSError):
                    name = "?"
                processes.append(ProcessUsage(proc.pid, name, (proc.usedGpuMemory or 0) >> 20))
            gpus.append(GpuSnapshot(
                index=index, name=str(nvml.nvmlDeviceGetName(handle)),
                total_mb=memory.total >> 20, used_mb=memory.used >> 20, free_mb=memory.free >> 20,
                llm_used_mb=sum(p.used_mb for p in processes if self._is_llm(p)),
                processes=processes,
            ))
        return gpus


def open_monitor(llm_processes: list[str] | None = None) -> VramMonitor:
    """NVML where a driver answers, else the no-GPU monitor.

    llm_processes: names and pids of the LLM's processes (LLM_PROCESSES), added to the
    ollama defaults."""
    entries = llm_processes or []
    names = DEFAULT_LLM_PROCESS_NAMES + tuple(e for e in entries if not e.isdigit())
    pids = frozenset(int(e) for e in entries if e.isdigit())
    try:
        return NvmlMonitor(names, pids)
    except Exception as exc:  # pynvml raises NVMLError_* or ImportError-like errors
        logger.info("no NVML (%s): VRAM monitor reports no GPU", exc)
        return NoGpuMonitor()


@dataclass(frozen=True)
class Scenario:
    """A timeline of the LLM's VRAM demand, for tests and bench/residency_sim.py.

    points: (t seconds, LLM MB, ramp) - with ramp the demand rises or falls linearly from
    the previous point, otherwise it steps at t."""

    name: str
    total_mb: int
    duration_s: float
    poll_s: float
    points: tuple[tuple[float, int, bool], ...]

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
        points = tuple((float(p["t"]), int(p["llm_mb"]), bool(p.get("ramp", False)))
                       for p in raw["llm"])
        return cls(raw.get("name", Path(path).stem), int(raw["total_mb"]),
                   float(raw["duration_s"]), float(raw.get("poll_s", 1.0)), points)

    def llm_mb(self, t: float) -> int:
        demand, previous = 0, (0.0, 0)
        for at, mb, ramp in self.points:
            if t < at:
                if ramp and at > previous[0]:
                    share = (t - previous[0]) / (at - previous[0])
                    return round(previous[1] + share * (mb - previous[1]))
                return demand
            demand, previous = mb, (at, mb)
        return demand


def shared_gpu(name: str, total_mb: int, llm_mb: int, ours_mb: int,
               index: int = 0) -> GpuSnapshot:
    """What NVML would report for one GPU the LLM shares with us: used = LLM + ours,
    capped at the total (the fakes' common ground)."""
    used = min(total_mb, llm_mb + ours_mb)
    return GpuSnapshot(index=index, name=name, total_mb=total_mb, used_mb=used,
                       free_mb=total_mb - used, llm_used_mb=llm_mb,
                       processes=[ProcessUsage(0, "ollama", llm_mb),
                                  ProcessUsage(0, "ocr-graph", ours_mb)])


class ScenarioMonitor:
    """Fake NVML for hosts without a GPU: one GPU whose LLM process follows a scenario.

    Our own usage comes from a callback (what the simulated replicas hold), so the
    monitor reports what NVML would: used = LLM + ours, capped at the total."""

    def __init__(self, scenario: Scenario, clock: Callable[[], float],
                 ours: Callable[[], int]):
        self.scenario, self.clock, self.ours = scenario, clock, ours

    def snapshot(self) -> list[GpuSnapshot]:
        return [shared_gpu(f"fake ({self.scenario.name})", self.scenario.total_mb,
                           self.scenario.llm_mb(self.clock()), self.ours())]


def ollama_vram_mb(client: httpx.Client, ollama_url: str) -> int:
    """What Ollama's loaded models hold on the GPU, from its GET /api/ps (size_vram)."""
    response = client.get(f"{ollama_url.rstrip('/')}/api/ps")
    response.raise_for_status()
    return sum(int(m.get("size_vram", 0)) for m in response.json().get("models", [])) >> 20


FAKE_GPU = "fake GPU (VRAM_FAKE_TOTAL_MB)"
# The Ollama whose models stand for the LLM on this node's fake GPU: read from the node's
# own environment (each `ray start` may name its own), else OLLAMA_URL.
NODE_OLLAMA_ENV = "VRAM_FAKE_OLLAMA_URL"


def node_ollama_url(default: str) -> str:
    return os.environ.get(NODE_OLLAMA_ENV) or default


def with_our_usage(snapshot: GpuSnapshot, ours_mb: int) -> GpuSnapshot:
    """A fake GPU's reading with our share as the replicas on it report holding (a replica
    reads only the LLM's share of its node's fake GPU; the controller knows all of ours)."""
    return shared_gpu(snapshot.name, snapshot.total_mb, snapshot.llm_used_mb, ours_mb,
                      snapshot.index)


class FakeGpuMonitor:
    """A GPU of a declared size for hosts without one (VRAM_FAKE_TOTAL_MB): the LLM's share
    comes from Ollama's real /api/ps, ours from what our replicas report holding on it."""

    def __init__(self, total_mb: int, ollama_url: str, ours: Callable[[], int]):
        self.total_mb, self.ollama_url, self.ours = total_mb, ollama_url, ours
        self.client = httpx.Client(timeout=1.0)
        self.llm_mb = 0

    def snapshot(self) -> list[GpuSnapshot]:
        try:
            self.llm_mb = ollama_vram_mb(self.client, self.ollama_url)
        except (httpx.HTTPError, ValueError) as exc:  # keep the last reading, say why
            logger.warning("Ollama /api/ps unreadable (%s): LLM share stays %d MB", exc,
                           self.llm_mb)
        return [shared_gpu(FAKE_GPU, self.total_mb, self.llm_mb,
                           self.ours())]
