"""The residency state machine per GPU from replica reports, and profile switching."""

from __future__ import annotations

import pytest

from deployments.residency.controller import ReplicaReport, Residency, ResidencyController
from deployments.residency.monitors import FAKE_GPU, GpuSnapshot, shared_gpu
from deployments.residency.profiles import load_profile


def test_profile_switch_at_runtime_through_user_config() -> None:
    controller = object.__new__(ResidencyController.func_or_class)
    controller.residency = Residency(load_profile("llm-first"), {"OCR": 600}, True, 0.0)
    controller.reconfigure({"profile": "ocr-batch"})
    assert controller.residency.profile.name == "ocr-batch"
    with pytest.raises(ValueError, match="known"):
        controller.reconfigure({"profile": "nonsense"})


class TwoGpus:
    """NVML of one node with two GPUs; the LLM fills GPU 1 only."""

    def __init__(self, residency: Residency):
        self.residency = residency
        self.llm_on_1 = 0

    def snapshot(self) -> list[GpuSnapshot]:
        return [shared_gpu("gpu0", 24000, 0, self.residency.held_mb("n:0"), 0),
                shared_gpu("gpu1", 24000, self.llm_on_1, self.residency.held_mb("n:1"), 1)]


def _report(deployment: str, gpu: str, device: str, held: int, at: float) -> ReplicaReport:
    return ReplicaReport(f"{deployment}@{gpu}", deployment, gpu, device, held, at)  # type: ignore[arg-type]


def test_each_gpu_is_decided_on_its_own_and_our_usage_is_what_replicas_report() -> None:
    footprints = {"Embedding": 2600, "OCR": 600}
    residency = Residency(load_profile("balanced"), footprints, True, 0.0, node="n")
    monitor = TwoGpus(residency)
    residency.monitor = monitor
    for gpu in ("n:0", "n:1"):
        residency.report(_report("Embedding", gpu, "cuda", 2600, 0.0))
        residency.report(_report("OCR", gpu, "cuda", 600, 0.0))
    residency.poll(0.0)
    assert residency.capacity()["gpus"][0]["used_mb"] == 3200  # reported, not decided
    monitor.llm_on_1 = 19000  # the LLM loads on GPU 1 only
    made = residency.poll(1.0)
    assert [(d.deployment, d.device) for d in made] == [("Embedding", "cpu")]
    assert residency.placement("Embedding", "n:1") == "cpu"
    assert residency.placement("Embedding", "n:0") == "gpu"  # not the minimum over all GPUs
    # Told to leave but not moved yet: its memory still counts as used, and the policy
    # does not evict the OCR model for memory that is on its way out.
    residency.report(_report("Embedding", "n:1", "cuda", 2600, 1.5))
    assert residency.poll(2.0) == []
    assert residency.capacity()["gpus"][1]["free_mb"] == 24000 - 19000 - 3200
    residency.report(_report("Embedding", "n:1", "cpu", 0, 2.5))  # its move ran
    residency.poll(3.0)
    gpu1 = residency.capacity()["gpus"][1]
    assert gpu1["free_mb"] == 24000 - 19000 - 600
    assert gpu1["placements"]["Embedding"]["device"] == "cpu"


def test_silent_replicas_stop_counting() -> None:
    residency = Residency(load_profile("balanced"), {"Embedding": 2600}, True, 0.0, node="n")
    residency.report(_report("Embedding", "n:0", "cuda", 2600, 0.0))
    assert residency.held_mb("n:0") == 2600
    residency.live_reports(100.0)
    assert residency.held_mb("n:0") == 0
    assert residency.placement("Embedding", None) == "cpu"  # a replica without a GPU


def test_a_gpu_of_another_node_is_decided_from_its_replicas_readings() -> None:
    residency = Residency(load_profile("balanced"), {"Embedding": 2600}, True, 0.0,
                          node="controller-node")
    residency.monitor = TwoGpus(residency)  # GPUs of the controller's node: n:0, n:1 there
    residency.monitor.residency = residency
    remote = shared_gpu("far", 24000, 22000, 2600, 3)
    residency.report(ReplicaReport("r", "Embedding", "far-node:3", "cuda", 2600, 0.0, remote))
    residency.poll(0.0)
    assert residency.placement("Embedding", "far-node:3") == "cpu"
    assert "far-node:3" in {gpu["key"] for gpu in residency.capacity()["gpus"]}


def test_a_fake_gpu_of_another_node_counts_what_the_replicas_there_report_holding() -> None:
    """A replica reads only the LLM's share of its node's fake GPU (its own Ollama); the
    controller adds what every replica on that GPU reports holding."""
    residency = Residency(load_profile("balanced"), {"Embedding": 2600, "OCR": 600}, True,
                          0.0, node="controller-node")
    residency.monitor = TwoGpus(residency)
    reading = shared_gpu(FAKE_GPU, 24000, 10000, 0)  # as node_monitor reads it there
    residency.report(ReplicaReport("e", "Embedding", "far:0", "cuda", 2600, 0.0, reading))
    residency.report(ReplicaReport("o", "OCR", "far:0", "cuda", 600, 0.0, reading))
    residency.poll(0.0)
    [far] = [gpu for gpu in residency.capacity()["gpus"] if gpu["key"] == "far:0"]
    assert far["free_mb"] == 24000 - 10000 - 3200 and far["llm_used_mb"] == 10000
    real = shared_gpu("nvml", 24000, 10000, 0, 0)  # NVML's own reading is taken as it is
    residency.report(ReplicaReport("e2", "Embedding", "far2:0", "cuda", 2600, 0.0, real))
    residency.poll(1.0)
    [far2] = [gpu for gpu in residency.capacity()["gpus"] if gpu["key"] == "far2:0"]
    assert far2["free_mb"] == 24000 - 10000
