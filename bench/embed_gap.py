"""Where the service's embedding throughput goes, beside the model's own sorted forward.

    python bench/embed_gap.py [--sentences 4096] [--rounds 2]

bench/embed_peer.py measures the service at 1-128 clients against the model's length-sorted
forward; this explains the difference, in one run:

1. The Embedding's own code (`Embedding._run`: plan, packed forwards) in this process, on
   the batches the service forms at 8 and 32 clients of 16 sentences, against the sorted
   forward on the same sentences: what the service would reach with no request path.
2. Both again while another process takes a fifth of one core in 5 ms bursts, as a
   request path or Ray's own loops do: what a competing load costs a forward of torch's two
   threads on two cores.
3. The service at 32 clients: the CPU each of its processes spent, and its idle cost.

Not part of `make bench` (its 15 minutes are spent); written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
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
from tests.fixtures.cluster import running_app  # noqa: E402

PER_REQUEST = 16
# Requests per batch as the Embedding forms them when every client waits for its answer
# before it sends again: a batch ends, its clients' next requests arrive while the first of
# them already runs alone. Seen by timing each batch in the replica during embed_peer:
# 8 clients alternate 1 and 7 requests, 32 clients 1 and 31.
SERVICE_BATCHES = {8: (1, 7), 32: (1, 31)}
COMPETING_SHARE = 0.2
BURNER = """
import sys, time
share = float(sys.argv[1])
while True:
    started = time.perf_counter()
    while time.perf_counter() - started < 0.005:
        pass
    time.sleep(0.005 * (1 - share) / share)
"""


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
def competing_load(share: float) -> Iterator[None]:
    """Another process busy `share` of one core, in 5 ms bursts, while the block runs."""
    if not share:
        yield
        return
    burner = subprocess.Popen([sys.executable, "-c", BURNER, str(share)])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process (the clients) and every process it started (this
    run's Ray cluster and HAProxy), by pid, with what each is for."""
    import psutil

    seen: dict[int, tuple[str, float]] = {}
    me = psutil.Process(os.getpid())
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            seen[process.pid] = (role(process, me), times.user + times.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return seen


def role(process: object, me: object) -> str:
    if process == me:
        return "the clients (this process)"
    name = label(process)
    return {"replica Embedding": "Embedding replica", "replica Ingress": "Ingress replica",
            "haproxy": "HAProxy"}.get(name, "Ray and Serve's own processes")


def spent_between(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
                  ) -> dict[str, float]:
    """CPU seconds by role between two `cpu_seconds()` snapshots, of the processes in both."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        if pid in before:
            spent[name] = spent.get(name, 0.0) + seconds - before[pid][1]
    return spent


def service_cpu(texts: list[str]) -> tuple[float, float, dict[str, float], float]:
    """(sentences/s at 32 clients, run seconds, CPU seconds by role, idle cores)."""
    with running_app(embedded_default()) as (url, key):
        headers = {"X-API-Key": key}
        asyncio.run(load(url, "/v1/embeddings", headers, texts[:256], PER_REQUEST, 8))
        before, started = cpu_seconds(), time.perf_counter()
        time.sleep(20)
        idle = sum(spent_between(before, cpu_seconds()).values())
        idle_cores = idle / (time.perf_counter() - started)
        before, started = cpu_seconds(), time.perf_counter()
        rate = asyncio.run(load(url, "/v1/embeddings", headers, texts, PER_REQUEST, 32))[0]
        elapsed, after = time.perf_counter() - started, cpu_seconds()
    return rate, elapsed, spent_between(before, after), idle_cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    texts = sentences(args.sentences)
    sides = {"sorted forward": sorted_forward(texts),
             **{f"Embedding._run, batches of {clients} clients": timer
                for clients, timer in service_batches(texts).items()}}
    best: dict[tuple[str, float], float] = {}
    # The VM's speed drifts within a run: every side runs once a round, in turn, and keeps
    # its fastest round.
    for _ in range(args.rounds):
        for share in (0.0, COMPETING_SHARE):
            with competing_load(share):
                for name, timed in sides.items():
                    best[name, share] = max(best.get((name, share), 0.0), timed())
    rate, elapsed, spent, idle_cores = service_cpu(texts)
    direct = best["sorted forward", 0.0]
    rows = "\n".join(
        f"| {name} | {best[name, 0.0]:.0f} ({best[name, 0.0] / direct:.2f}) | "
        f"{best[name, COMPETING_SHARE]:.0f} ({best[name, COMPETING_SHARE] / best[name, 0.0]:.2f})"
        " |" for name in sides)
    requests = len(texts) / PER_REQUEST
    cpu_rows = "\n".join(
        f"| {name} | {seconds:.2f} | {seconds / requests * 1000:.1f} | "
        f"{seconds / (2 * elapsed):.0%} |"
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1]))
    report = (
        f"MiniLM-L6 on the CPU (2 cores), {args.sentences} sentences of 6-14 words, "
        f"{PER_REQUEST} per request; each side's fastest of {args.rounds} rounds in turn.\n\n"
        "| in this process | sentences/s (of the sorted forward) | with another process "
        f"busy {COMPETING_SHARE:.0%} of one core (of its own rate) |\n|---|---|---|\n"
        f"{rows}\n\n"
        f"The service at 32 clients: {rate:.0f} sentences/s ({rate / direct:.2f} of the "
        f"sorted forward) over {elapsed:.1f} s; idle before the run, its processes took "
        f"{idle_cores:.2f} of a core.\n\n"
        "| process | CPU s in the run | CPU ms a request | of the run's 2 cores |\n"
        f"|---|---|---|---|\n{cpu_rows}\n")
    print(report)
    write_report(report, "embed_gap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
