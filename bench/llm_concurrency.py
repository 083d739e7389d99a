"""A 32-page document through the llm engine vs the same pages sent one after another.

    python bench/llm_concurrency.py [--pages 32] [--latency 0.2]

A fake Ollama answers /api/chat after `--latency` seconds per page (the model's time).
Sequential: each page's /api/chat call made in turn, as a client without concurrency
would. Service: one /v1/ocr/upload of the whole PDF with engine=llm, pages in flight
as OCR_PAGES_IN_FLIGHT allows. The speed-up is written to docs/benchmarks.md.
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


def service(ollama: FakeOllama, pdf: bytes, in_flight: int) -> tuple[float, int]:
    import httpx

    small = {"ray_actor_options": {"num_cpus": 0.1}}
    args = {
        "segmentation_model": None, "embedding_model": None, "rerank_model": None,
        "ocr_engines": ["ollama-vlm"],
        "settings": {"OLLAMA_URL": ollama.url, "RESIDENCY_PROFILE": "cpu-only",
                     "OCR_PAGES_IN_FLIGHT": in_flight},
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args()
    ollama = FakeOllama(latency_s=args.latency).start()
    try:
        one_by_one = sequential(ollama, args.pages)
        served, calls = service(ollama, pages_pdf(args.pages), args.in_flight)
    finally:
        ollama.stop()
    assert calls == args.pages, f"{calls} LLM calls for {args.pages} pages"
    report = (
        f"{args.pages}-page scanned PDF, fake Ollama answering each page after "
        f"{args.latency * 1000:.0f} ms, OCR_PAGES_IN_FLIGHT={args.in_flight}.\n\n"
        "| path | seconds | speed-up |\n|---|---|---|\n"
        f"| pages sent one after another (direct /api/chat) | {one_by_one:.2f} | 1.0x |\n"
        f"| service: one /v1/ocr/upload, engine=llm | {served:.2f} | "
        f"**{one_by_one / served:.1f}x** |\n"
    )
    print(report)
    write_report(report, "llm_concurrency")


if __name__ == "__main__":
    main()
