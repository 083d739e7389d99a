"""VRAM monitors, the replica's placement follower, runtime profile switching."""

from __future__ import annotations

import asyncio
import os
import sys
import types
from pathlib import Path

import pytest

from deployments.replica import PlacementFollower
from deployments.residency import Residency, ResidencyController, load_profile
from deployments.vram import NoGpuMonitor, NvmlMonitor, Scenario, ScenarioMonitor, open_monitor

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"


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


class Handle:
    """A DeploymentHandle stand-in: .placement.remote(name) awaits an answer or fails."""

    def __init__(self, answer: str | Exception):
        self.answer = answer
        self.placement = self

    def remote(self, deployment: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if isinstance(self.answer, Exception):
            future.set_exception(self.answer)
        else:
            future.set_result(self.answer)
        return future


def test_follower_moves_when_told_and_keeps_its_place_when_the_controller_is_gone() -> None:
    moved: list[str] = []
    handle = Handle("cpu")
    follower = PlacementFollower("Embedding", handle, moved.append, "gpu", cache_s=0.0)
    assert asyncio.run(follower.ensure()) == "cpu" and moved == ["cpu"]
    handle.answer = ConnectionError("controller restarting")
    assert asyncio.run(follower.ensure()) == "cpu" and moved == ["cpu"]
    handle.answer = "gpu"
    assert asyncio.run(follower.ensure()) == "gpu" and moved == ["cpu", "gpu"]
    assert follower.moves == 2


def test_follower_trusts_an_answer_for_one_polling_period() -> None:
    moved: list[str] = []
    follower = PlacementFollower("OCR", Handle("cpu"), moved.append, "gpu", cache_s=3600)
    asyncio.run(follower.ensure())
    follower.residency = Handle("gpu")
    assert asyncio.run(follower.ensure()) == "cpu"  # still within the period


def test_profile_switch_at_runtime_through_user_config() -> None:
    controller = object.__new__(ResidencyController.func_or_class)
    controller.residency = Residency(load_profile("llm-first"), {"OCR": 600}, True, 0.0)
    controller.reconfigure({"profile": "ocr-batch"})
    assert controller.residency.profile.name == "ocr-batch"
    with pytest.raises(ValueError, match="known"):
        controller.reconfigure({"profile": "nonsense"})
