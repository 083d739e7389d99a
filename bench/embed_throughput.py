"""Embeddings per second through HTTP vs the same model called directly, in one run.

    python bench/embed_throughput.py [--sentences 4096] [--concurrency 32] [--per-request 64]

Direct: FlagModel loaded in this process; its own forward + pooling over batches of
`--per-request` sentences (the fair baseline, see docs/architecture.md), and, for reference,
FlagModel.encode called once per batch. Service: Ray Serve with the Ingress and the
Embedding deployment on this machine's CPU, `--concurrency` clients posting
`--per-request` sentences each to /v1/embed. The ratio service / direct is the result;
it is written to docs/benchmarks.md between this benchmark's markers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402
from tests.fixtures.cluster import running_app  # noqa: E402 - after the path setup

WORDS = [
    "archive",
    "letter",
    "mother",
    "harbour",
    "invoice",
    "winter",
    "garden",
    "church",
    "village",
    "school",
    "father",
    "travel",
    "money",
    "doctor",
    "weather",
    "family",
    "train",
    "station",
    "market",
    "river",
    "house",
    "wrote",
    "sends",
    "received",
    "remember",
    "visited",
    "bought",
    "needs",
    "arrived",
    "soon",
    "tomorrow",
    "yesterday",
    "quickly",
    "old",
    "new",
    "small",
    "large",
    "happy",
    "cold",
    "warm",
    "long",
    "short",
]


def sentences(count: int, seed: int = 7) -> list[str]:
    """Short sentences of 6-14 words, the shape of OCR'd lines and titles."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choices(WORDS, k=rng.randint(6, 14))).capitalize() + "." for _ in range(count)
    ]


def direct(texts: list[str], per_batch: int) -> dict[str, float]:
    import torch
    from FlagEmbedding import FlagModel

    from deployments.models import load_catalog, resolve_weights
    from serve_app.kernel.settings import Settings

    spec = load_catalog()["all-minilm-l6-v2"]
    path = str(resolve_weights(spec, Settings(OCR_SIDECAR_API_KEY="bench")))
    flag = FlagModel(
        path, pooling_method="mean", normalize_embeddings=True, use_fp16=False, devices=["cpu"]
    )
    model, tokenizer = flag.model.eval(), flag.tokenizer

    def own_forward() -> None:
        for start in range(0, len(texts), per_batch):
            batch = tokenizer(
                texts[start : start + per_batch],
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = model(**batch, return_dict=True).last_hidden_state
                torch.nn.functional.normalize(flag.pooling(hidden, batch["attention_mask"]), dim=-1)

    def encode_per_batch() -> None:
        for start in range(0, len(texts), per_batch):
            flag.encode(texts[start : start + per_batch], batch_size=per_batch)

    own_forward()  # warm-up
    results = {}
    for name, run in (("own_forward", own_forward), ("encode_per_batch", encode_per_batch)):
        started = time.perf_counter()
        run()
        results[name] = len(texts) / (time.perf_counter() - started)
    return results


async def _post_all(
    url: str, key: str, texts: list[str], per_request: int, concurrency: int
) -> float:
    import httpx

    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": key}, timeout=600, limits=limits
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                response = await client.post("/v1/embed", json={"texts": chunk})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - started)


def service(texts: list[str], per_request: int, concurrency: int) -> float:
    small = {"ray_actor_options": {"num_cpus": 0.1}}
    args = {
        "ocr_model": None, "segmentation_model": None, "rerank_model": None,
        "training_model": None,
        "settings": {"RESIDENCY_PROFILE": "cpu-only"},
        # Ray sets OMP_NUM_THREADS to a replica's num_cpus; give torch the same two
        # threads the direct run uses.
        "deployment_options": {"Embedding": {"ray_actor_options": {
            "num_cpus": 1, "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "2"}}}},
            "Ingress": small, "ResidencyController": small},
    }
    with running_app(args) as (url, key):
        asyncio.run(_post_all(url, key, texts[: per_request * concurrency], per_request,
                              concurrency))  # warm-up
        return asyncio.run(_post_all(url, key, texts, per_request, concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--per-request", type=int, default=64)
    args = parser.parse_args()
    texts = sentences(args.sentences)
    base = direct(texts, args.per_request)
    served = service(texts, args.per_request, args.concurrency)
    ratio = served / base["own_forward"]
    report = (
        f"Run on {os.cpu_count()} cores ({platform.machine()}), all-minilm-l6-v2, fp32, "
        f"{args.sentences} sentences of 6-14 words, {args.per_request} per request/batch.\n\n"
        "| path | sentences/s | ratio to direct forward |\n|---|---|---|\n"
        f"| direct: FlagModel's own forward, {args.per_request} a batch | "
        f"{base['own_forward']:.0f} | 1.00 |\n"
        f"| direct: FlagModel.encode once per {args.per_request} | "
        f"{base['encode_per_batch']:.0f} | {base['encode_per_batch'] / base['own_forward']:.2f} |\n"
        f"| service: HTTP /v1/embed, concurrency {args.concurrency} | {served:.0f} | "
        f"**{ratio:.2f}** |\n"
    )
    print(report)
    write_report(report, "embed_throughput")


if __name__ == "__main__":
    main()
