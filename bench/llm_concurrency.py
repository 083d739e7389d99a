"""A 32-page document through the llm engine vs the same pages sent one after another.

    python bench/llm_concurrency.py [--pages 32] [--latency 0.5] [--slots 4]

A fake Ollama behaves like one GPU: it answers /api/chat after `--latency` seconds per
page (the model's time), runs at most `--slots` requests at once (OLLAMA_NUM_PARALLEL)
and queues the rest. Sequential: each page's /api/chat call made in turn, as a client
without concurrency would. Service: one /v1/ocr/upload of the whole PDF with engine=llm
and the service's default settings (OCR_PAGES_IN_FLIGHT 8). The best any client can do
is keep every slot busy: slots x the sequential speed; target: the service reaches 0.9
of that. Written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from tests.fixtures.cluster import running_app  # noqa: E402 - after the path setup
from tests.fixtures.documents import pages_pdf  # noqa: E402
from tests.fixtures.fake_ollama import FakeOllama  # noqa: E402


def sequential(ollama: FakeOllama, pages: int) -> float:
    import httpx

    body = {"model": "m", "messages": [{"role": "user", "content": "x", "images": []}],
            "stream": False}
    started = time.perf_counter()
    with httpx.Client(timeout=60) as client:
        for _ in range(pages):
            client.post(f"{ollama.url}/api/chat", json=body).raise_for_status()
    return time.perf_counter() - started


def service(ollama: FakeOllama, pdf: bytes) -> tuple[float, int]:
    import httpx

    small = {"ray_actor_options": {"num_cpus": 0.1}}
    args = {
        "segmentation_model": None, "embedding_model": None, "rerank_model": None,
        "training_model": None,
        "ocr_engines": ["ollama-vlm"],
        "settings": {"OLLAMA_URL": ollama.url, "RESIDENCY_PROFILE": "cpu-only"},
        "deployment_options": {name: small for name in ("OCR", "Ingress", "ResidencyController")},
    }
    options = json.dumps({"engine": "llm", "dpi": 72, "formats": ["text"]})
    with running_app(args) as (url, key), httpx.Client(
        base_url=url, headers={"X-API-Key": key}, timeout=600
    ) as client:

        def run() -> httpx.Response:
            return client.post("/v1/ocr/upload", files={"file": ("doc.pdf", pdf)},
                               data={"options": options})

        run().raise_for_status()  # warm-up
        ollama.chats.clear()
        started = time.perf_counter()
        run().raise_for_status()
        return time.perf_counter() - started, len(ollama.chats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    ollama = FakeOllama(latency_s=args.latency, num_parallel=args.slots).start()
    try:
        one_by_one = sequential(ollama, args.pages)
        ollama.most_at_once = 0
        served, calls = service(ollama, pages_pdf(args.pages))
    finally:
        ollama.stop()
    assert calls == args.pages, f"{calls} LLM calls for {args.pages} pages"
    of_slots = one_by_one / served / args.slots
    report = (
        f"{args.pages}-page scanned PDF; a fake Ollama with {args.slots} parallel slots "
        f"(OLLAMA_NUM_PARALLEL) answering each page after {args.latency * 1000:.0f} ms and "
        "queueing beyond its slots; the service with its default settings.\n\n"
        "| path | seconds | speed-up | share of the upstream's slots used |\n"
        "|---|---|---|---|\n"
        f"| pages sent one after another (direct /api/chat) | {one_by_one:.2f} | 1.0x | "
        f"{1 / args.slots:.2f} |\n"
        f"| service: one /v1/ocr/upload, engine=llm | {served:.2f} | "
        f"{one_by_one / served:.1f}x | **{of_slots:.2f}** |\n\n"
        f"At most {ollama.most_at_once} of the service's pages ran in the upstream at once. "
        "Target: >= 0.90 of the slots.\n"
    )
    print(report)
    write_report(report, "llm_concurrency")
    return 0 if of_slots >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
