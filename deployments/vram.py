"""VRAM monitor: what each GPU holds and how much of it is the LLM's.

pynvml reads the real GPUs; where NVML is missing (no driver, a laptop, CI)
the monitor answers "no GPU" instead of failing.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

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
    """pynvml backend; raises at construction where there is no NVIDIA driver."""

    def __init__(self, llm_process_names: tuple[str, ...] = DEFAULT_LLM_PROCESS_NAMES):
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.llm_names = tuple(name.lower() for name in llm_process_names)

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
            llm = sum(p.used_mb for p in processes if p.name.lower().startswith(self.llm_names))
            gpus.append(GpuSnapshot(
                index=index, name=str(nvml.nvmlDeviceGetName(handle)),
                total_mb=memory.total >> 20, used_mb=memory.used >> 20, free_mb=memory.free >> 20,
                llm_used_mb=llm, processes=processes,
            ))
        return gpus


def open_monitor() -> VramMonitor:
    """NVML where a driver answers, else the no-GPU monitor."""
    try:
        return NvmlMonitor()
    except Exception as exc:  # pynvml raises NVMLError_* or ImportError-like errors
        logger.info("no NVML (%s): VRAM monitor reports no GPU", exc)
        return NoGpuMonitor()
