"""Where the service's embedding throughput goes, beside the model's own sorted forward.

    python bench/embed_gap.py [--sentences 4096] [--rounds 2]

bench/embed_peer.py measures the service at 1-128 clients against the model's length-sorted
forward; this explains the difference, in one run:

1. The Embedding's own code (`Embedding._run`: plan, packed forwards) in this process, on
   the batches the service forms at 8 and 32 clients of 16 sentences, against the sorted
   forward on the same sentences: what the service would reach with no request path.
2. Both with this run's cluster idle beside them, and with its processes stopped
   (SIGSTOP, as if no cluster ran): what an idle Ray Serve cluster costs a forward of
   torch's two threads on two cores.
3. The service at 32 clients: the CPU each of its processes spent, the Embedding
   replica's split into its model's threads (`ocrg-model`, deployments/model_thread.py)
   and the rest, and the cluster's idle cost.

Not part of `make bench` (its 15 minutes are spent); written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embed_peer import load, sorted_forward  # noqa: E402
from bench.embed_throughput import sentences  # noqa: E402
from bench.footprint import label  # noqa: E402
from bench.overload import embedded_default  # noqa: E402
from bench.report import write_report  # noqa: E402
from bench.stopped import cluster_stopped, started_processes  # noqa: E402
from deployments.model_thread import OS_THREAD_NAME  # noqa: E402
from tests.fixtures.cluster import running_app  # noqa: E402

PER_REQUEST = 16
# Requests per batch as the Embedding forms them when every client waits for its answer
# before it sends again: a batch ends, its clients' next requests arrive while the first of
# them already runs alone. Seen by timing each batch in the replica during embed_peer:
# 8 clients alternate 1 and 7 requests, 32 clients 1 and 31.
SERVICE_BATCHES = {8: (1, 7), 32: (1, 31)}
STOPPED, IDLE = "cluster stopped", "cluster idle beside"


def own_code(clients: int) -> str:
    """The table's name for the Embedding's code on the batches of `clients` clients."""
    return f"Embedding._run, batches of {clients} clients"


def service_batches(texts: list[str]) -> dict[int, Callable[[], float]]:
    """Per client count, a timer of one pass of `Embedding._run` over all texts in the
    batches the service forms at that count."""
    from deployments.embedding import Embedding, split_into_jobs
    from deployments.engines.embedding import ENGINES
    from deployments.models import load_catalog
    from serve_app.kernel.settings import Settings

    spec = load_catalog()["all-minilm-l6-v2"]
    replica = SimpleNamespace(engine=ENGINES[spec.engine](
        spec, Settings(OCR_SIDECAR_API_KEY="bench"), "cpu"))
    run = Embedding.func_or_class._run
    dense = frozenset({"dense"})
    requests = [split_into_jobs(replica.engine.tokenize(texts[i:i + PER_REQUEST], None), dense)
                for i in range(0, len(texts), PER_REQUEST)]

    def timer(pattern: tuple[int, ...]) -> Callable[[], float]:
        def one_pass() -> None:
            at = turn = 0
            while at < len(requests):
                count = pattern[turn % len(pattern)]
                run(replica, [job for request in requests[at:at + count] for job in request])
                at, turn = at + count, turn + 1

        def timed() -> float:
            one_pass()  # warm-up, as the sorted forward has
            started = time.perf_counter()
            one_pass()
            return len(texts) / (time.perf_counter() - started)

        return timed

    return {clients: timer(pattern) for clients, pattern in SERVICE_BATCHES.items()}


@contextmanager
def cluster_state(state: str) -> Iterator[None]:
    """The block runs with this run's cluster stopped (bench/stopped.py) or idle."""
    if state == IDLE:
        yield
        return
    with cluster_stopped():
        yield


def cpu_seconds() -> dict[tuple[int, str], float]:
    """CPU seconds so far of this process (the clients) and every process it started, by
    (pid, what it is for); the Embedding replica's split into its model's threads and the
    rest."""
    import psutil

    seen: dict[tuple[int, str], float] = {}
    me = psutil.Process(os.getpid())
    for process in [me, *started_processes()]:
        try:
            name = role(process, me)
            if name != "Embedding replica":
                times = process.cpu_times()
                seen[process.pid, name] = times.user + times.system
                continue
            for thread in process.threads():
                comm = Path(f"/proc/{process.pid}/task/{thread.id}/comm")
                part = ("its model's threads" if comm.read_text().strip() == OS_THREAD_NAME
                        else "request handling and Ray")
                key = (process.pid, f"Embedding replica: {part}")
                seen[key] = seen.get(key, 0.0) + thread.user_time + thread.system_time
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
            continue
    return seen


def role(process: object, me: object) -> str:
    if process == me:
        return "the clients (this process)"
    name = label(process)
    return {"replica Embedding": "Embedding replica", "replica Ingress": "Ingress replica",
            "haproxy": "HAProxy"}.get(name, "Ray and Serve's own processes")


def spent_between(before: dict[tuple[int, str], float], after: dict[tuple[int, str], float]
                  ) -> dict[str, float]:
    """CPU seconds by role between two `cpu_seconds()` snapshots, of the processes in both
    (a thread that ended between them takes its seconds with it)."""
    spent: dict[str, float] = {}
    for key, seconds in after.items():
        if key in before:
            spent[key[1]] = spent.get(key[1], 0.0) + seconds - before[key]
    return spent


def idle_cores() -> float:
    """Cores the idle cluster takes, over 20 s."""
    before, started = cpu_seconds(), time.perf_counter()
    time.sleep(20)
    return sum(spent_between(before, cpu_seconds()).values()) / (time.perf_counter() - started)


def service_cpu(url: str, headers: dict[str, str], texts: list[str]
                ) -> tuple[float, float, dict[str, float]]:
    """(sentences/s at 32 clients, run seconds, CPU seconds by role)."""
    before, started = cpu_seconds(), time.perf_counter()
    rate = asyncio.run(load(url, "/v1/embeddings", headers, texts, PER_REQUEST, 32))[0]
    elapsed, after = time.perf_counter() - started, cpu_seconds()
    return rate, elapsed, spent_between(before, after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    texts = sentences(args.sentences)
    sides = {"sorted forward": sorted_forward(texts),
             **{own_code(clients): timer
                for clients, timer in service_batches(texts).items()}}
    best: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], float] = {}  # least CPU seconds of one pass
    with running_app(embedded_default()) as (url, key):
        headers = {"X-API-Key": key}
        asyncio.run(load(url, "/v1/embeddings", headers, texts[:256], PER_REQUEST, 8))
        idle = idle_cores()
        # The VM's speed drifts within a run: every side runs once a round in each state,
        # in turn, and keeps its fastest round.
        for _ in range(args.rounds):
            for state in (STOPPED, IDLE):
                for name, timed in sides.items():
                    with cluster_state(state):
                        used = time.process_time()
                        best[name, state] = max(best.get((name, state), 0.0), timed())
                        used = (time.process_time() - used) / 2  # a warm-up pass, a timed
                    cpu[name, state] = min(cpu.get((name, state), float("inf")), used)
        rate, elapsed, spent = service_cpu(url, headers, texts)
    direct = best["sorted forward", STOPPED]
    rows = "\n".join(
        f"| {name} | {best[name, STOPPED]:.0f} ({best[name, STOPPED] / direct:.2f}) | "
        f"{best[name, IDLE]:.0f} ({best[name, IDLE] / best[name, STOPPED]:.2f}) |"
        for name in sides)
    requests = len(texts) / PER_REQUEST
    cpu_rows = "\n".join(
        f"| {name} | {seconds:.2f} | {seconds / requests * 1000:.1f} | "
        f"{seconds / (2 * elapsed):.0%} |"
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1]))
    own, own_cpu = best[own_code(32), STOPPED], cpu[own_code(32), STOPPED]
    report = (
        f"MiniLM-L6 on the CPU (2 cores), {args.sentences} sentences of 6-14 words, "
        f"{PER_REQUEST} per request; each side's fastest of {args.rounds} rounds in turn.\n\n"
        f"| in this process | sentences/s, {STOPPED} (of the sorted forward) | "
        f"{IDLE} (of its rate with the cluster stopped) |\n|---|---|---|\n{rows}\n\n"
        f"The cluster idle took {idle:.2f} of a core. The service at 32 clients: "
        f"{rate:.0f} sentences/s ({rate / direct:.2f} of the sorted forward, {rate / own:.2f} "
        f"of its own code on its 32-client batches with the cluster stopped) over "
        f"{elapsed:.1f} s. That code took {own_cpu / requests * 1000:.1f} ms of CPU a request "
        "in this process, with the cluster stopped.\n\n"
        "| process | CPU s in the run | CPU ms a request | of the run's 2 cores |\n"
        f"|---|---|---|---|\n{cpu_rows}\n")
    print(report)
    write_report(report, "embed_gap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
