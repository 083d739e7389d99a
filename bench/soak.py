"""A long mixed load on the embedded default: does anything leak, die or slow down?

    python bench/soak.py [--minutes 10]     (make soak; SOAK_MINUTES=60 make soak)

config/local.yaml's graph without tesseract, llm and training (rapidocr OCR, kraken blla,
MiniLM embeddings, embedding-similarity rerank) under a steady load for `--minutes`:
6 clients embedding 64 sentences at a time, 2 reranking 32 documents, 1 OCR'ing a scanned
page with rapidocr, 1 segmenting it, 1 reading a 60-page born-digital PDF (the ingress's
text-layer processes), each sending its next request as soon as one returns.
Every minute it records per route the requests, errors and p99 latency, and each
replica's RSS. Passes when no request failed other than 503 overloaded, no replica
restarted, and no replica's peak RSS in the second half of the run is more than 10% above
its peak in the first half. The last run's table is docs/soak.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embed_throughput import sentences  # noqa: E402
from bench.overload import ReplicaWatch, percentile  # noqa: E402
from tests.fixtures.cluster import local_default_args, running_app  # noqa: E402
from tests.fixtures.documents import LINES, scanned_pdf, text_pdf  # noqa: E402

REPLICAS = ("Ingress", "OCR", "Segmentation", "Embedding")  # the Ingress also reranks (ADR 015)


def soak_app() -> dict[str, Any]:
    """config/local.yaml's application without the engines this load does not use."""
    return local_default_args(ocr_engines=[], training_model=None)


class Tally:
    """Per minute and route: latencies of successes, counts of each failure status."""

    def __init__(self, started: float):
        self.started = started
        self.latencies: dict[tuple[int, str], list[float]] = defaultdict(list)
        self.failures: dict[tuple[int, str], dict[int, int]] = defaultdict(
            lambda: defaultdict(int))

    def add(self, route: str, status: int, seconds: float) -> None:
        minute = int((time.perf_counter() - self.started) // 60)
        if status == 200:
            self.latencies[(minute, route)].append(seconds)
        else:
            self.failures[(minute, route)][status] += 1


async def client(url: str, key: str, name: str, route: str, call: dict[str, Any],
                 tally: Tally, until: float) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key},
                                 timeout=600) as http:
        while time.perf_counter() < until:
            sent = time.perf_counter()
            try:
                response = await http.post(route, **call)
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            tally.add(name, status, time.perf_counter() - sent)
            if status == 503:  # told to retry later: do as a well-behaved client does
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def load(url: str, key: str, minutes: float, watch: ReplicaWatch
               ) -> tuple[Tally, list[dict[str, float]]]:
    texts = sentences(64 * 50)
    page = scanned_pdf()
    until = time.perf_counter() + minutes * 60
    tally = Tally(time.perf_counter())
    document = text_pdf(LINES * 8, pages=60)
    calls: list[tuple[str, str, dict[str, Any]]] = (  # (name in the table, route, request)
        [("/v1/embed", "/v1/embed", {"json": {"texts": texts[i * 64:(i + 1) * 64]}})
         for i in range(6)]
        + [("/v1/rerank", "/v1/rerank",
            {"json": {"query": texts[0], "documents": texts[1:33]}})] * 2
        + [("/v1/ocr/upload (scan)", "/v1/ocr/upload",
            {"files": {"file": ("scan.pdf", page)}, "data": {"options": '{"engine": "rapidocr"}'}}),
           ("/v1/ocr/upload (60-page born-digital)", "/v1/ocr/upload",
            {"files": {"file": ("document.pdf", document)}}),
           ("/v1/segment/upload", "/v1/segment/upload", {"files": {"file": ("scan.pdf", page)}})])
    memory: list[dict[str, float]] = []

    async def sample() -> None:
        while time.perf_counter() < until:
            await asyncio.sleep(60)  # a sampling period, not a synchronisation
            memory.append(watch.rss_mb())

    await asyncio.gather(sample(), *(client(url, key, name, route, call, tally, until)
                                     for name, route, call in calls))
    return tally, memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    args = parser.parse_args()
    with running_app(soak_app()) as (url, key):
        watch = ReplicaWatch("bench", REPLICAS)
        tally, memory = asyncio.run(load(url, key, args.minutes, watch))
        restarted = watch.replicas() != watch.pids
    routes = sorted({route for _, route in tally.latencies} | {r for _, r in tally.failures})
    minutes = sorted({minute for minute, _ in tally.latencies} | {m for m, _ in tally.failures})
    rows = []
    for minute in minutes:
        cells = []
        for route in routes:
            done = tally.latencies.get((minute, route), [])
            failed = dict(tally.failures.get((minute, route), {}))
            cells.append(f"{len(done)} ok, p99 {percentile(done, 0.99):.1f} s"
                         + (f", failed {failed}" if failed else ""))
        rss = memory[minute] if minute < len(memory) else {}
        rows.append(f"| {minute + 1} | " + " | ".join(cells) + " | "
                    + ", ".join(f"{name} {mb:.0f}" for name, mb in sorted(rss.items())) + " |")
    errors = {status: count for failures in tally.failures.values()
              for status, count in failures.items() if status != 503}
    # A leak keeps growing; warm-up and the allocator's ups and downs do not: compare the
    # peak of the second half of the run with the peak of the first.
    half = len(memory) // 2
    growth = {name: max(m[name] for m in memory[half:] if name in m)
              / max(m[name] for m in memory[:half] if name in m) - 1
              for name in memory[0]} if half else {}
    checks = {
        "no failure but 503 overloaded": not errors,
        "no replica restarted": not restarted,
        "no replica's peak RSS grew > 10% from the first half to the second": all(
            g <= 0.10 for g in growth.values()),
    }
    report = (
        f"# Soak: the last run of `make soak`\n\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.minutes:g} minutes on "
        f"{platform.machine()} with its cores shared by the load and the graph. "
        "Load: 6 clients x /v1/embed (64 sentences), 2 x /v1/rerank (32 documents), 1 x "
        "/v1/ocr/upload (rapidocr, one scanned page), 1 x /v1/ocr/upload (a 60-page "
        "born-digital PDF), 1 x /v1/segment/upload; each sends "
        "its next request when one returns. Reproduce: `make soak` "
        "(`SOAK_MINUTES=60 make soak` for an hour).\n\n"
        "| minute | " + " | ".join(f"`{route}`" for route in routes)
        + " | replica RSS at the minute's end (MB) |\n"
        + "|---" * (len(routes) + 2) + "|\n" + "\n".join(rows) + "\n\n"
        + "Peak RSS, second half of the run against the first: "
        + ", ".join(f"{name} {value:+.1%}" for name, value in sorted(growth.items())) + "\n\n"
        + "".join(f"- {name}: {'pass' if ok else 'FAIL'}\n" for name, ok in checks.items())
        + (f"\nFailures other than 503: {errors}\n" if errors else "")
    )
    print(report)
    (ROOT / "docs" / "soak.md").write_text(report, encoding="utf-8")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
