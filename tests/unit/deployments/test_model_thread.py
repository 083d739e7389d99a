"""A replica's torch work runs on one thread: libgomp keeps a team of workers for every
thread that calls torch, and more teams than CPUs make its workers sleep between parallel
regions (9-17% slower forwards in a replica, docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deployments import replica
from deployments.embedding import Embedding
from deployments.engines.embedding import DenseEncoder
from deployments.model_thread import call_on_model_thread, run_on_model_thread
from deployments.models import load_catalog
from deployments.replica import PlacementFollower
from serve_app.kernel.settings import Settings
from tests.fixtures.fresh_python import fresh_python


def test_work_runs_on_one_thread_in_the_order_asked_and_may_nest() -> None:
    async def run() -> list[tuple[str, int]]:
        done: list[tuple[str, int]] = []
        await asyncio.gather(*(run_on_model_thread(
            lambda n=n: done.append((threading.current_thread().name, n))) for n in range(5)))
        return done

    done = asyncio.run(run())
    assert [n for _, n in done] == [0, 1, 2, 3, 4]
    names = {name for name, _ in done}
    assert len(names) == 1 and names != {threading.current_thread().name}
    # A start that builds an engine which itself asks for the model thread does not wait
    # for itself.
    inner = call_on_model_thread(lambda: call_on_model_thread(threading.current_thread))
    assert inner.name in names


class NoRay:
    """ray.get_runtime_context() of a CPU replica, outside a Ray worker."""

    def get_assigned_resources(self) -> dict[str, float]:
        return {}

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        return {}

    def get_node_id(self) -> str:
        return "node"


def test_the_embedding_replica_runs_its_warm_up_and_every_forward_on_one_thread(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    clean_env.setenv("MODEL_REPLICA_NICENESS", "0")  # not the test process's own niceness
    clean_env.setattr(replica.ray, "get_runtime_context", NoRay)
    threads: list[str] = []
    forward = DenseEncoder.forward

    def recorded(self: DenseEncoder, batch: list[list[int]], want: frozenset[str]) -> Any:
        threads.append(threading.current_thread().name)
        return forward(self, batch, want)

    clean_env.setattr(DenseEncoder, "forward", recorded)

    async def run() -> list[list[dict[str, Any]]]:
        embedding = object.__new__(Embedding.func_or_class)
        await embedding.__init__(load_catalog()["all-minilm-l6-v2"], Settings.load())
        assert threads, "the start measures a forward's cost"
        return await asyncio.gather(*(embedding.embed([f"Brief Nummer {n}", "Hallo"], ["dense"])
                                      for n in range(6)))

    answers = asyncio.run(run())
    assert [len(answer) for answer in answers] == [2] * 6
    assert len(set(threads)) == 1, f"torch ran on {sorted(set(threads))}"
    assert threads[0] != threading.current_thread().name


def test_a_move_runs_on_the_model_thread() -> None:
    where: list[str] = []
    follower = PlacementFollower("Embedding", SimpleNamespace(), lambda placement: where.append(
        threading.current_thread().name), "gpu", 1.0)
    model_thread = call_on_model_thread(lambda: threading.current_thread().name)
    asyncio.run(follower.move_to("cpu"))
    assert where == [model_thread] and follower.placement == "cpu"


@pytest.mark.parametrize(("engine", "call", "work"), [
    ("deployments.engines.rerank.cross_encoder:CrossEncoderEngine",
     lambda engine: engine.score([]), "_score"),
    ("deployments.engines.ocr.kraken:KrakenRecognitionEngine",
     lambda engine: engine.recognize(None, {"segmentation": []}), "_recognize"),
    ("deployments.engines.ocr.surya:SuryaEngine", lambda engine: engine._read_in_thread([]),
     "read"),
])
def test_the_torch_engines_run_their_work_on_the_model_thread(engine: str, call: Any,
                                                              work: str) -> None:
    import importlib

    module, name = engine.split(":")
    instance = object.__new__(getattr(importlib.import_module(module), name))
    setattr(instance, work, lambda *args: threading.current_thread().name)
    model_thread = call_on_model_thread(lambda: threading.current_thread().name)
    assert asyncio.run(call(instance)) == model_thread


def test_the_segmentation_replica_segments_on_the_model_thread() -> None:
    from deployments.segmentation import Segmentation

    segmentation = object.__new__(Segmentation.func_or_class)
    segmentation.spec = SimpleNamespace(name="kraken-blla", trained=None)
    segmentation.follower = PlacementFollower("Segmentation", None, lambda _: None, "cpu", 1.0)
    segmentation.engine = SimpleNamespace(
        segment=lambda image: {"thread": threading.current_thread().name})
    model_thread = call_on_model_thread(lambda: threading.current_thread().name)
    assert asyncio.run(segmentation.segment(None))["thread"] == model_thread


NICENESS_PROBE = """
import asyncio, json, os, threading
from deployments import replica
from deployments.embedding import Embedding
from deployments.model_thread import call_on_model_thread
from deployments.models import load_catalog
from serve_app.kernel.settings import Settings
from tests.unit.deployments.test_model_thread import NoRay

replica.ray.get_runtime_context = NoRay
base = os.getpriority(os.PRIO_PROCESS, 0)
before = replica.thread_ids()

async def start():
    embedding = object.__new__(Embedding.func_or_class)
    await embedding.__init__(load_catalog()["all-minilm-l6-v2"], Settings.load())

asyncio.run(start())
model = call_on_model_thread(threading.get_native_id)
started = {t: os.getpriority(os.PRIO_PROCESS, t) - base
           for t in replica.thread_ids() - before if t != model}
print(json.dumps({"model": os.getpriority(os.PRIO_PROCESS, model) - base,
                  "this": os.getpriority(os.PRIO_PROCESS, 0) - base,
                  "started": sorted(started.values())}))
"""


def test_model_compute_runs_at_the_replicas_lower_priority(
        clean_env: pytest.MonkeyPatch) -> None:
    """The model thread and the OpenMP workers it started yield as the replica's event loop
    does: Linux keeps a nice value per thread. Its own process: niceness cannot be undone."""
    import json

    output = fresh_python(NICENESS_PROBE, OCR_SIDECAR_API_KEY="k",
                          MODEL_REPLICA_NICENESS="3", OMP_NUM_THREADS="2")
    niceness = json.loads(output.strip().splitlines()[-1])
    assert niceness["model"] == 3 and niceness["this"] == 3
    assert niceness["started"] and set(niceness["started"]) == {3}, niceness


def os_thread_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux names threads in /proc")
def test_the_model_thread_and_the_threads_it_starts_carry_its_os_name() -> None:
    """What `top -H` and bench/embed_gap.py tell the model's threads apart by; torch's
    OpenMP workers are started from the model thread as this one is."""
    def started_here() -> str:
        names: list[str] = []
        worker = threading.Thread(target=lambda: names.append(os_thread_name()))
        worker.start()
        worker.join()
        return names[0]

    assert call_on_model_thread(os_thread_name) == "ocrg-model"
    assert call_on_model_thread(started_here) == "ocrg-model"
    assert os_thread_name() != "ocrg-model"
