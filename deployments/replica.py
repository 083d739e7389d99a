"""What every model replica shares: its report, its GPU memory cap, following placement."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar, TypeVar

import ray
from ray.serve.handle import DeploymentHandle

from deployments.model_store import ensure_present
from deployments.model_thread import call_on_model_thread, run_on_model_thread
from deployments.models import ModelSpec
from deployments.residency.controller import ReplicaReport, gpu_key
from deployments.residency.monitors import (
    FakeGpuMonitor,
    VramMonitor,
    node_ollama_url,
    open_monitor,
)
from deployments.trained_models import TrainedModels
from serve_app.kernel.errors import Overloaded
from serve_app.kernel.settings import Settings

logger = logging.getLogger("ray.serve")
Result = TypeVar("Result")
OOM_RETRY_AFTER_S = 5  # a move back and forth takes seconds; an immediate retry would fail

GPU_HEADROOM = 1.15  # allocator cap = share of the GPU * headroom


def torch_device(placement: str) -> str:
    """The torch device for a placement: cuda only where this replica can really use it.
    A CPU placement does not import torch: rapidocr, on onnxruntime, never needs it, and
    its import is 2 CPU s of a cold start (the Embedding imports it for its own work)."""
    if placement != "gpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cap_gpu_memory(share: float) -> None:
    """Ray's GPU fractions are logical: cap this process's torch allocator to its share."""
    if not share:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(1.0, share * GPU_HEADROOM))


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a model loads. Its imports (torch,
    transformers, FlagEmbedding, kraken) and the model build hundreds of thousands of
    objects, none of them garbage, and the collector keeps walking them: a process that
    imports Ray Serve and builds the Embedding's engine took 8.1-8.7 CPU s without it,
    9.4-10.1 with it (three pairs, 2 cores), at a cold start where every replica competes
    for those cores. Serve collects and freezes what the replica's start built once it
    ends (RAY_SERVE_FREEZE_GC_ON_STARTUP)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def thread_ids() -> set[int]:
    """This process's threads as the kernel numbers them (none where /proc is missing)."""
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def lower_priority(thread: int, by: int) -> None:
    """Raise one thread's nice value by `by` (never needs privileges); a thread that has
    ended meanwhile is left alone."""
    with contextlib.suppress(ProcessLookupError):
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + by)


def gpu_allocated_mb() -> int | None:
    """torch's allocated CUDA memory; None where this process never imported torch (an
    onnxruntime engine) rather than importing it to answer."""
    torch = sys.modules.get("torch")
    return torch.cuda.memory_allocated() >> 20 if torch and torch.cuda.is_available() else None


class ControllerAnswer:
    """One answer of the ResidencyController, trusted for cache_s (its polling period: the
    answer cannot change faster). A controller that cannot be reached or is slow leaves
    the last answer standing, and the replica logs that."""

    def __init__(self, what: str, ask: Callable[[], Awaitable[Any]] | None, initial: Any,
                 cache_s: float):
        self.what, self.ask, self.value, self.cache_s = what, ask, initial, cache_s
        self.checked = float("-inf")

    async def get(self) -> Any:
        if self.ask is None or time.monotonic() - self.checked < self.cache_s:
            return self.value
        self.checked = time.monotonic()
        try:
            self.value = await asyncio.wait_for(self.ask(), timeout=2.0)
        except Exception as exc:  # unreachable or slow controller: keep the last answer
            logger.warning("residency controller unreachable (%s); %s stays %s",
                           type(exc).__name__, self.what, self.value)
        return self.value


class PlacementFollower:
    """The replica's control loop: every poll it reports what it holds to the
    ResidencyController and moves its weights where the controller says, with or without
    traffic. A request waits while a move runs; two moves never overlap.

    `report()` says where the weights are: "cuda" when torch holds them on the GPU, and
    also on a simulated GPU (VRAM_FAKE_TOTAL_MB) while the placement is the GPU: there the
    weights stay on the CPU but the replica holds its footprint of the simulated GPU until
    its own move has run."""

    def __init__(self, deployment: str, residency: DeploymentHandle | None,
                 move: Callable[[str], None], placement: str, poll_s: float,
                 footprint_mb: int = 0, gpu: str | None = None, simulated: bool = False,
                 replica: str = "replica", monitor: VramMonitor | None = None):
        self.deployment, self.residency, self.move = deployment, residency, move
        self.placement = placement  # where this replica is now
        self.wanted = placement  # what the controller said last
        self.poll_s, self.footprint_mb = poll_s, footprint_mb
        self.gpu, self.simulated, self.replica = gpu, simulated, replica
        self.moves = 0
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        # NVML of this replica's node: a controller on another node learns this GPU from it.
        self.monitor = monitor

    def device(self, torch_device: str) -> str:
        """Where the weights are, as this replica reports it."""
        return "cuda" if torch_device == "cuda" or (
            self.simulated and self.placement == "gpu") else "cpu"

    def held_mb(self, torch_device: str) -> int:
        if self.simulated:
            return self.footprint_mb if self.placement == "gpu" else 0
        if torch_device != "cuda":
            return 0
        return gpu_allocated_mb() or 0

    def report(self, torch_device: str) -> ReplicaReport:
        index = self.gpu.rsplit(":", 1)[-1] if self.gpu else None
        snapshot = next((g for g in self.monitor.snapshot() if str(g.index) == index),
                        None) if self.monitor is not None and index is not None else None
        return ReplicaReport(self.replica, self.deployment, self.gpu,
                             "cuda" if self.device(torch_device) == "cuda" else "cpu",
                             self.held_mb(torch_device), time.monotonic(), snapshot)

    async def step(self, torch_device: Callable[[], str]) -> str:
        """One poll: report, learn the placement, move if it changed."""
        if self.residency is None:
            return self.placement
        try:
            self.wanted = await asyncio.wait_for(
                self.residency.follow.remote(self.report(torch_device())), timeout=2.0)
        except Exception as exc:  # unreachable or slow controller: stay where we are
            logger.warning("residency controller unreachable (%s); %s stays on %s",
                           type(exc).__name__, self.deployment, self.placement)
            return self.placement
        if self.wanted != self.placement:
            await self.move_to(self.wanted)
            with contextlib.suppress(Exception):  # say at once what it holds now
                await asyncio.wait_for(
                    self.residency.follow.remote(self.report(torch_device())), timeout=2.0)
        return self.placement

    def begin(self, torch_device: Callable[[], str]) -> None:
        """Start the loop on the replica's event loop (from an async __init__)."""
        if self.residency is None or self.task is not None:
            return

        async def loop() -> None:
            while True:
                await self.step(torch_device)
                await asyncio.sleep(self.poll_s)  # the polling period

        self.task = asyncio.get_running_loop().create_task(loop())

    async def move_to(self, placement: str) -> None:
        """Move the weights now, after any move that is running."""
        async with self.lock:
            if placement != self.placement:
                started = time.monotonic()
                await run_on_model_thread(self.move, placement)
                logger.info("%s moved %s -> %s in %.1f s", self.deployment, self.placement,
                            placement, time.monotonic() - started)
                self.placement, self.moves = placement, self.moves + 1

    async def ensure(self) -> str:
        """Before a request: wait for a move that is running."""
        async with self.lock:
            return self.placement

    async def run(self, work: Callable[[], Awaitable[Result]]) -> Result:
        """A request's work where the weights are, after any running move. CUDA out of
        memory (the LLM took the VRAM first) is not the client's fault: the replica moves
        to the CPU and runs the work once more there; the controller learns it on the next
        poll. If that fails for memory too, 503 with Retry-After."""
        await self.ensure()
        try:
            return await work()
        except Exception as exc:
            if not is_cuda_oom(exc):
                raise
            logger.warning("%s: CUDA out of memory (%s); moving to the CPU and retrying once",
                           self.deployment, exc)
        try:
            await self.move_to("cpu")
            return await work()
        except Exception as exc:
            if not is_cuda_oom(exc) and not isinstance(exc, MemoryError):
                raise
            raise Overloaded(f"{self.deployment} ran out of GPU memory and could not finish on "
                             f"the CPU either ({type(exc).__name__}): retry shortly",
                             headers={"Retry-After": str(OOM_RETRY_AFTER_S)}) from None


def is_cuda_oom(exc: BaseException) -> bool:
    """torch's CUDA OutOfMemoryError, or the CUDA allocation failure of another runtime
    (onnxruntime's CUDA provider says "CUDA failure 2: out of memory")."""
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or ("cuda" in text
                                                        and "out of memory" in text)


class TrainedVersions:
    """Which version of each trained model a replica serves: the one active in the model
    store, unless the deployment's user_config pins one: {"trained": {NAME: VERSION}}."""

    def __init__(self, names: list[str], settings: Settings):
        self.names = tuple(dict.fromkeys(names))
        self.store = TrainedModels(settings.trained_models_dir)
        self.pinned: dict[str, int] = {}
        self.loaded: dict[str, int | None] = {}

    def wanted(self) -> dict[str, int | None]:
        return {name: self.pinned.get(name, self.store.active_number(name))
                for name in self.names}

    def changes(self) -> dict[str, int | None]:
        """Names whose wanted version differs from the loaded one (a file read each)."""
        return {name: version for name, version in self.wanted().items()
                if name not in self.loaded or self.loaded[name] != version}


def replica_info(deployment: str, spec: ModelSpec, device: str,
                 follower: PlacementFollower | None = None) -> dict[str, Any]:
    """The ModelInfo body of /v1/capacity and /v1/models for one replica."""
    resources = ray.get_runtime_context().get_assigned_resources()
    return {
        "deployment": deployment,
        "node_id": ray.get_runtime_context().get_node_id(),
        "model": spec.name,
        "kind": spec.kind,
        "engine": spec.engine,
        "device": follower.device(device) if follower else device,
        "placement": follower.wanted if follower else "cpu",
        "moves": follower.moves if follower else 0,
        "held_mb": follower.held_mb(device) if follower else 0,
        "gpu": follower.gpu if follower else None,
        "footprint_mb": spec.footprint_mb,
        "gpu_share": round(float(resources.get("GPU", 0.0)), 4),
        "gpu_allocated_mb": gpu_allocated_mb() if spec.footprint_mb else None,
        # Ray sets this for replicas with num_gpus > 0; it is what torch/CUDA will see.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "loaded": True,
    }


def own_gpu() -> str | None:
    """This actor's GPU as the controller keys GPUs: "<node id>:<index>"; None without."""
    context = ray.get_runtime_context()
    gpu_ids = context.get_accelerator_ids().get("GPU", [])
    return gpu_key(context.get_node_id(), gpu_ids[0]) if gpu_ids else None


def node_monitor(settings: Settings) -> VramMonitor:
    """This node's GPUs, for a controller on another node: NVML, or with VRAM_FAKE_TOTAL_MB
    a fake GPU whose LLM share is this node's Ollama's (our share: the controller's sum)."""
    if settings.vram_fake_total_mb is None:
        return open_monitor(settings.llm_processes)
    return FakeGpuMonitor(settings.vram_fake_total_mb, node_ollama_url(settings.ollama_url),
                          lambda: 0)


def _replica_id() -> str:
    from ray import serve

    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a Serve replica (unit tests): the actor or process
        return f"pid-{os.getpid()}"


class ModelReplica:
    """Base of the model deployments: engine start on the right device, moves, report."""

    deployment_name = "model"
    # Environment this deployment's processes need from their start (the builder adds it
    # to the replica's runtime_env; a deployment's own options override it).
    process_env: ClassVar[dict[str, str]] = {}

    def start(self, spec: ModelSpec, settings: Settings, residency: DeploymentHandle | None,
              make_engine: Callable[[str], Any]) -> None:
        self.spec = spec
        share = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
        placement = "gpu" if share else "cpu"
        holds_weights = spec.footprint_mb > 0
        ensure_present(spec, settings)  # where the catalog allows it: pulled, else says how
        with collector_paused():
            if holds_weights:
                cap_gpu_memory(share)
            self.device = torch_device(placement) if holds_weights else "cpu"
            before = thread_ids()
            self.engine = call_on_model_thread(make_engine, self.device)
        # Model compute yields the CPU to the ingress and proxy, which must keep answering
        # (503s within a second, health checks) while every core is busy with models; what
        # that costs a model's throughput: ADR 012. Not before the engine is built: a cold
        # start waits for the slowest model to load.
        # Linux keeps a nice value per thread, and a thread starts with its creator's: so
        # this thread (tokenizing, batching), the model thread and the threads the engine's
        # start began (torch's OpenMP workers) each lower their own.
        model_compute = (thread_ids() - before) | {call_on_model_thread(threading.get_native_id)}
        os.nice(settings.model_niceness)
        for thread in model_compute - {threading.get_native_id()}:
            lower_priority(thread, settings.model_niceness)
        follows = residency if holds_weights and share else None
        simulated = settings.vram_fake_total_mb is not None
        self.follower = PlacementFollower(
            self.deployment_name, follows, self._move, placement, settings.residency_poll_s,
            spec.footprint_mb, own_gpu(), simulated, _replica_id(),
            node_monitor(settings) if follows else None)
        logger.info("%s: %s (%s) ready on %s", self.deployment_name, spec.name, spec.engine,
                    self.device)

    def follow_placement(self) -> None:
        """Start following the controller (from the deployment's async __init__)."""
        self.follower.begin(lambda: self.device)

    def _move(self, placement: str) -> None:
        device = torch_device(placement)
        if device == self.device:
            return
        self.engine.move(device)
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        self.device = device

    def describe(self) -> dict[str, Any]:
        return replica_info(self.deployment_name, self.spec, self.device, self.follower)

    # ---- trained models: followed through reconfigure -------------------------------------

    def follow_trained(self, names: list[str], settings: Settings) -> None:
        """Serve these trained models' active versions (called at the end of __init__)."""
        self.trained = TrainedVersions(names, settings)
        self._trained_lock = asyncio.Lock()
        self.trained.loaded = self.trained.wanted()  # what the engines were built with

    async def sync_trained(self) -> None:
        """Before a request: load a newly activated version. Requests already running keep
        the engine they started with; the swap is one assignment."""
        trained = getattr(self, "trained", None)
        if trained is None or not trained.names or not trained.changes():
            return
        async with self._trained_lock:
            changes = trained.changes()
            if changes:
                await run_on_model_thread(self.load_trained, changes)
                trained.loaded.update(changes)
                logger.info("%s serves trained versions %s", self.deployment_name,
                            trained.loaded)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's user_config: {"trained": {NAME: VERSION}} pins versions; a name mapped
        to null follows the store's active version again."""
        trained = getattr(self, "trained", None)
        if trained is None:
            return
        for name, version in (config or {}).get("trained", {}).items():
            if version is None:
                trained.pinned.pop(name, None)
            else:
                trained.pinned[name] = int(version)
        await self.sync_trained()

    def load_trained(self, changes: dict[str, int | None]) -> None:
        """Build the engines of these versions (on the model thread; the deployment
        overrides it)."""
