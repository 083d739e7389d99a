"""VRAM monitors: NVML (a stand-in module with its real call names), no GPU, scenarios."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from deployments.residency.monitors import (
    NoGpuMonitor,
    NvmlMonitor,
    Scenario,
    ScenarioMonitor,
    open_monitor,
)

SCENARIOS = Path(__file__).resolve().parents[4] / "bench" / "scenarios"


def fake_pynvml(processes: list[tuple[int, int]]) -> types.ModuleType:
    """NVML without a GPU: the real pynvml call names, answering one 24 GB card."""
    module = types.ModuleType("pynvml")
    mb = 1 << 20
    module.nvmlInit = lambda: None
    module.nvmlDeviceGetCount = lambda: 1
    module.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    module.nvmlDeviceGetName = lambda handle: "NVIDIA RTX 4090"
    module.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(
        total=24564 * mb, used=sum(u for _, u in processes) * mb,
        free=(24564 - sum(u for _, u in processes)) * mb)
    module.nvmlDeviceGetComputeRunningProcesses = lambda handle: [
        types.SimpleNamespace(pid=pid, usedGpuMemory=used * mb) for pid, used in processes]
    return module


def test_nvml_snapshot_attributes_the_llm_by_name_and_pid(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    me, ghost = os.getpid(), 999_999_999  # this process is "python"; the ghost has no name
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(me, 3000), (ghost, 9000)]))
    [gpu] = open_monitor(["python"]).snapshot()
    assert (gpu.total_mb, gpu.used_mb, gpu.free_mb) == (24564, 12000, 12564)
    assert gpu.llm_used_mb == 3000
    [gpu] = open_monitor([str(ghost)]).snapshot()
    assert gpu.llm_used_mb == 9000  # named by pid, e.g. a container's runner
    assert isinstance(open_monitor(), NvmlMonitor)


def test_without_nvml_the_monitor_says_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("pynvml")

    def no_driver() -> None:
        raise OSError("NVML Shared Library Not Found")

    broken.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    monitor = open_monitor()
    assert isinstance(monitor, NoGpuMonitor) and monitor.snapshot() == []


def test_scenario_steps_and_ramps() -> None:
    ramp = Scenario.load(SCENARIOS / "ramp.yaml")
    assert ramp.llm_mb(5) == 4096 and ramp.llm_mb(40) == 11264 and ramp.llm_mb(80) == 18432
    load = Scenario.load(SCENARIOS / "llm-load.yaml")
    assert [load.llm_mb(t) for t in (9, 10, 59, 60)] == [0, 14336, 14336, 0]
    [gpu] = ScenarioMonitor(load, lambda: 30.0, lambda: 2000).snapshot()
    assert (gpu.used_mb, gpu.llm_used_mb) == (16336, 14336)
