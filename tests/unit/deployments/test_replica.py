"""A model replica follows the ResidencyController on its own: it reports what it holds
every poll and moves when told, idle or busy; requests wait for a running move."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from deployments.replica import PlacementFollower
from deployments.residency.controller import ReplicaReport
from serve_app.kernel.errors import InvalidInput, Overloaded
from tests.fixtures.fresh_python import fresh_python


class Controller:
    """A DeploymentHandle stand-in: .follow.remote(report) answers a placement or fails,
    and keeps every report it received."""

    def __init__(self, answer: str | Exception):
        self.answer = answer
        self.reports: list[ReplicaReport] = []
        self.follow = self

    def remote(self, report: ReplicaReport) -> asyncio.Future[str]:
        self.reports.append(report)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if isinstance(self.answer, Exception):
            future.set_exception(self.answer)
        else:
            future.set_result(self.answer)
        return future


def _follower(controller: Controller, moved: list[str], **options: Any) -> PlacementFollower:
    return PlacementFollower("Embedding", controller, moved.append, "gpu", 0.01,
                             footprint_mb=2600, gpu="node:0", replica="r1", **options)


def test_the_follower_moves_when_told_and_stays_when_the_controller_is_gone() -> None:
    moved: list[str] = []
    controller = Controller("cpu")
    follower = _follower(controller, moved)

    async def run() -> None:
        assert await follower.step(lambda: "cpu") == "cpu" and moved == ["cpu"]
        controller.answer = ConnectionError("controller restarting")
        assert await follower.step(lambda: "cpu") == "cpu" and moved == ["cpu"]
        controller.answer = "gpu"
        assert await follower.step(lambda: "cpu") == "gpu" and moved == ["cpu", "gpu"]

    asyncio.run(run())
    assert follower.moves == 2


def test_a_simulated_gpu_is_held_until_the_replica_s_own_move_has_run() -> None:
    moved: list[str] = []
    controller = Controller("cpu")
    follower = _follower(controller, moved, simulated=True)
    assert (follower.device("cpu"), follower.held_mb("cpu")) == ("cuda", 2600)

    async def run() -> None:
        await follower.step(lambda: "cpu")

    asyncio.run(run())
    # The report sent with the step still held the GPU: the decision had not run yet.
    assert (controller.reports[0].device, controller.reports[0].held_mb) == ("cuda", 2600)
    assert (follower.device("cpu"), follower.held_mb("cpu")) == ("cpu", 0)
    assert follower.report("cpu").held_mb == 0


def test_the_loop_moves_an_idle_replica_and_a_request_waits_for_the_move() -> None:
    moved: list[str] = []
    release = asyncio.Event()

    async def run() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []

        def slow_move(placement: str) -> None:
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
            moved.append(placement)
            order.append("moved")

        follower = PlacementFollower("OCR", Controller("cpu"), slow_move, "gpu", 0.01,
                                     footprint_mb=600, gpu="node:0")
        follower.begin(lambda: "cpu")  # no request: the loop alone
        while not follower.lock.locked():  # the move has started
            await asyncio.sleep(0)
        waiting = asyncio.create_task(follower.ensure())
        await asyncio.sleep(0)
        assert not waiting.done()  # the request waits while the move runs
        release.set()
        order.append(f"request on {await waiting}")
        assert follower.task is not None
        follower.task.cancel()
        return order

    assert asyncio.run(run()) == ["moved", "request on cpu"]
    assert moved == ["cpu"]


def test_a_replica_reports_its_own_gpu_as_nvml_sees_it_on_its_node() -> None:
    from deployments.residency.monitors import shared_gpu

    class NodeNvml:
        def snapshot(self) -> list[Any]:
            return [shared_gpu("a", 24000, 0, 0, 0), shared_gpu("b", 24000, 9000, 2600, 1)]

    follower = PlacementFollower("Embedding", Controller("gpu"), lambda _: None, "gpu", 1.0,
                                 footprint_mb=2600, gpu="other-node:1", monitor=NodeNvml())
    report = follower.report("cpu")
    assert report.snapshot is not None and report.snapshot.llm_used_mb == 9000
    assert _follower(Controller("gpu"), []).report("cpu").snapshot is None  # no NVML


class CudaOutOfMemory(RuntimeError):
    """What torch raises (torch.cuda.OutOfMemoryError), without a GPU to raise it."""


CudaOutOfMemory.__name__ = "OutOfMemoryError"


def test_cuda_out_of_memory_moves_the_replica_to_the_cpu_and_runs_once_more() -> None:
    moved: list[str] = []
    follower = _follower(Controller("gpu"), moved)
    runs: list[str] = []

    async def work() -> str:
        runs.append(follower.placement)
        if follower.placement == "gpu":
            raise CudaOutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "embedded"

    assert asyncio.run(follower.run(work)) == "embedded"
    assert runs == ["gpu", "cpu"] and moved == ["cpu"]
    assert follower.report("cpu").device == "cpu"  # the controller learns it on its poll


def test_out_of_memory_on_the_cpu_too_is_503_with_retry_after_and_other_errors_pass() -> None:
    follower = _follower(Controller("gpu"), [])

    async def always_oom() -> None:
        raise RuntimeError("CUDA failure 2: out of memory ; GPU=0 ; expr=cudaMalloc")

    with pytest.raises(Overloaded) as refused:
        asyncio.run(follower.run(always_oom))
    assert refused.value.headers["Retry-After"]

    async def bad_input() -> None:
        raise InvalidInput("page image must be RGB")

    still_gpu = _follower(Controller("gpu"), moved := [])
    with pytest.raises(InvalidInput):
        asyncio.run(still_gpu.run(bad_input))
    assert moved == [] and still_gpu.placement == "gpu"


@pytest.mark.parametrize("fails", [False, True], ids=["loads", "fails to load"])
def test_a_model_loads_with_the_garbage_collector_off_and_gets_it_back_after(
        clean_env: pytest.MonkeyPatch, fails: bool) -> None:
    """A cold start pays the collector's walks over every object a model's imports build;
    a replica serving, or one whose load failed, must not run without it."""
    import gc

    from deployments import replica
    from deployments.models import load_catalog
    from serve_app.kernel.settings import Settings
    from tests.unit.deployments.test_model_thread import NoRay

    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    clean_env.setenv("MODEL_REPLICA_NICENESS", "0")  # not the test process's own niceness
    clean_env.setattr(replica.ray, "get_runtime_context", NoRay)
    during: list[bool] = []

    def make_engine(device: str) -> object:
        during.append(gc.isenabled())
        if fails:
            raise ValueError("not a model file")
        return object()

    model = replica.ModelReplica()
    assert gc.isenabled()
    if fails:
        with pytest.raises(ValueError, match="not a model file"):
            model.start(load_catalog()["tesseract"], Settings.load(), None, make_engine)
    else:
        model.start(load_catalog()["tesseract"], Settings.load(), None, make_engine)
    assert during == [False]
    assert gc.isenabled()


def test_a_cpu_replica_of_an_onnxruntime_engine_never_imports_torch(
        clean_env: pytest.MonkeyPatch) -> None:
    """rapidocr runs on onnxruntime: importing torch to learn that the device is the CPU
    cost the OCR replica 2 CPU s of every cold start and torch's memory for good."""
    code = ("import sys\n"
            "from deployments import replica\n"
            "from deployments.engines.ocr.rapidocr import RapidOcrEngine\n"
            "from deployments.models import load_catalog\n"
            "from serve_app.kernel.settings import Settings\n"
            "from tests.unit.deployments.test_model_thread import NoRay\n"
            "replica.ray.get_runtime_context = NoRay\n"
            "spec, settings = load_catalog()['rapidocr'], Settings.load()\n"
            "model = replica.ModelReplica()\n"
            "model.start(spec, settings, None,\n"
            "            lambda device: RapidOcrEngine(spec, settings, device))\n"
            "info = model.describe()\n"
            "print(model.device, info['gpu_allocated_mb'], 'torch' in sys.modules)\n")
    output = fresh_python(code, OCR_SIDECAR_API_KEY="k", MODEL_REPLICA_NICENESS="0")
    assert output.split() == ["cpu", "None", "False"]
