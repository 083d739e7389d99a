"""800 clients at once against /v1/embed: refusals fast, accepted requests in bounded time.

    python bench/overload.py [--clients 800] [--per-request 64]

The embedded default on this machine: Ingress and Embedding (MiniLM) with their default
queue bounds (max_ongoing_requests + max_queued_requests in deployments/embedding.py).
First the rate at concurrency 32 (the baseline: the same service without overload), then
`--clients` requests of `--per-request` sentences sent at once, no retries. Targets
(issue 15): p99 of the accepted requests <= 30 s, refusals (503 + Retry-After) answered
within 1 s, accepted throughput >= 0.8 of the rate at concurrency 32, no replica
restarted, replica memory bounded (peak RSS reported). Written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embed_throughput import sentences  # noqa: E402
from bench.report import write_report  # noqa: E402
from tests.fixtures.cluster import local_default_args, running_app  # noqa: E402


class Outcome(NamedTuple):
    status: int
    seconds: float  # since the request's body was sent
    since_burst: float  # since the burst began: when it finished
    retry_after: str


def embedded_default() -> dict[str, Any]:
    """config/local.yaml's application arguments, with only the Embedding deployed."""
    return local_default_args(ocr_model=None, ocr_engines=[], segmentation_model=None,
                              rerank_model=None, training_model=None)


async def concurrency_32(url: str, key: str, texts: list[str], per_request: int) -> float:
    """Sentences/s with 32 clients, each posting its next request when one returns."""
    import httpx

    chunks = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=600,
                                 limits=httpx.Limits(max_connections=32)) as client:
        async def worker(mine: list[list[str]]) -> None:
            for chunk in mine:
                (await client.post("/v1/embed", json={"texts": chunk})).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker(chunks[i::32]) for i in range(32)))
        return len(texts) / (time.perf_counter() - started)


async def all_at_once(url: str, key: str, texts: list[str], clients: int) -> list[Outcome]:
    """What each of `clients` simultaneous posts got. aiohttp, not httpx: httpx's
    connection pool costs grow with hundreds of requests in flight, and the client must not
    be what is measured; for the same reason the body is encoded once, not per request
    (the clients share the service's two cores). A request's latency runs from the moment
    its body was written to the socket: opening 800 connections and writing 800 requests
    takes the client itself a second or more on these cores, and that is not the service's
    time; the time since the burst began is reported beside it."""
    import aiohttp
    import orjson

    body = orjson.dumps({"texts": texts})
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    async def body_written(_session: Any, context: Any, _params: Any) -> None:
        context.trace_request_ctx["sent"] = time.perf_counter()

    tracing = aiohttp.TraceConfig()
    tracing.on_request_chunk_sent.append(body_written)
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector,
                                     timeout=timeout, trace_configs=[tracing]) as session:
        start = time.perf_counter()

        async def one() -> Outcome:
            sending: dict[str, float] = {"sent": start}
            try:
                async with session.post("/v1/embed", data=body,
                                        trace_request_ctx=sending) as response:
                    await response.read()
                    status = response.status
                    retry = response.headers.get("retry-after", "")
            except aiohttp.ClientError as exc:
                status, retry = 0, type(exc).__name__
            done = time.perf_counter()
            return Outcome(status, done - sending["sent"], done - start, retry)

        return await asyncio.gather(*(one() for _ in range(clients)))


class ReplicaWatch:
    """Process ids and RSS of an app's replica processes: its peak while the load runs
    (`thread`), or a reading now (`rss_mb`)."""

    def __init__(self, app: str = "bench", names: tuple[str, ...] = ("Ingress", "Embedding")):
        import psutil

        self.psutil, self.app, self.names = psutil, app, names
        self.peak_mb: dict[str, float] = {}
        self.pids = self.replicas()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def replicas(self) -> dict[str, int]:
        found = {}
        for process in self.psutil.process_iter(["pid", "cmdline"]):
            title = " ".join(process.info["cmdline"] or [])
            for name in self.names:
                if f"ServeReplica:{self.app}:{name}" in title:
                    found[name] = process.info["pid"]
        return found

    def rss_mb(self) -> dict[str, float]:
        """Each replica's RSS, and its own processes' together where it has some (the
        Ingress's text-layer readers) as "<name> processes"."""
        readings = {}
        for name, pid in self.pids.items():
            try:
                replica = self.psutil.Process(pid)
                readings[name] = replica.memory_info().rss / 2**20
                children = replica.children(recursive=True)
                if children:
                    readings[f"{name} processes"] = sum(
                        child.memory_info().rss for child in children) / 2**20
            except self.psutil.NoSuchProcess:
                continue
        return readings

    def watch(self) -> None:
        while not self.done.wait(0.25):  # a sampling period, not a synchronisation
            for name, rss in self.rss_mb().items():
                self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), rss)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=800)
    parser.add_argument("--per-request", type=int, default=64)
    args = parser.parse_args()
    texts = sentences(32 * 6 * args.per_request)
    with running_app(embedded_default()) as (url, key):
        asyncio.run(concurrency_32(url, key, texts[:32 * args.per_request], args.per_request))
        baseline = asyncio.run(concurrency_32(url, key, texts, args.per_request))
        watch = ReplicaWatch()
        memory_before = watch.rss_mb()
        watch.thread.start()
        results = asyncio.run(all_at_once(url, key, texts[:args.per_request], args.clients))
        watch.done.set()
        restarted = watch.replicas() != watch.pids
    accepted = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 503]
    other = [r for r in results if r.status not in (200, 503)]
    span = max((r.since_burst for r in accepted), default=0.0)
    throughput = len(accepted) * args.per_request / span if span else 0.0
    p99_accepted = percentile([r.seconds for r in accepted], 0.99)
    p99_refused = percentile([r.seconds for r in refused], 0.99)
    ratio = throughput / baseline
    checks = {
        "p99 accepted <= 30 s": p99_accepted <= 30,
        "p99 refusal <= 1 s": p99_refused <= 1,
        "accepted throughput >= 0.8 of concurrency 32": ratio >= 0.8,
        "every refusal has Retry-After": all(r.retry_after for r in refused),
        "no other status": not other,
        "no replica restarted": not restarted,
    }
    memory = ", ".join(f"{name} {memory_before[name]:.0f} -> peak {watch.peak_mb.get(name, 0):.0f}"
                       for name in sorted(memory_before))
    report = (
        f"{args.clients} requests of {args.per_request} sentences sent at once to /v1/embed "
        "(MiniLM, the embedded default's Embedding, its default queue bounds), no retries; "
        "baseline: the same service at concurrency 32.\n\n"
        "| measure | value |\n|---|---|\n"
        f"| rate at concurrency 32 | {baseline:.0f} sentences/s |\n"
        f"| accepted (200) / refused (503) / other | {len(accepted)} / {len(refused)} / "
        f"{len(other)} |\n"
        f"| accepted: p50 / p99 since sent | {percentile([r.seconds for r in accepted], 0.5):.1f} s"
        f" / {p99_accepted:.1f} s |\n"
        f"| refused: p50 / p99 since sent | {percentile([r.seconds for r in refused], 0.5):.2f} s"
        f" / {p99_refused:.2f} s |\n"
        f"| refused: p50 / p99 since the burst began | "
        f"{percentile([r.since_burst for r in refused], 0.5):.2f} s / "
        f"{percentile([r.since_burst for r in refused], 0.99):.2f} s |\n"
        f"| accepted throughput | {throughput:.0f} sentences/s, **{ratio:.2f}** of "
        "concurrency 32 |\n"
        f"| replica RSS (MB) | {memory} |\n\n"
        + "".join(f"- {name}: {'pass' if ok else 'FAIL'}\n" for name, ok in checks.items())
    )
    print(report)
    write_report(report, "overload")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
