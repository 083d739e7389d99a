"""Embeddings: the service against infinity-emb on the same model, and against the model's
own length-sorted forward, at concurrency 1, 8, 32 and 128, in one run.

    python bench/embed_peer.py [--sentences 4096] [--per-request 16] [--rounds 2]

infinity-emb is installed by this script into a venv of its own (bench/.venvs/infinity,
pinned below) and serves the same MiniLM files from the same package path, on the CPU,
mean pooling, its defaults otherwise. Both servers get the same OpenAI-shaped requests
(`/embeddings` there, `/v1/embeddings` here), one server at a time on the same cores. The
direct baseline is the model's forward over all sentences sorted by length, 64 a batch:
what a user with the model and no server gets at best, on torch and on ONNX Runtime (the
service runs its encoder there on a machine without a GPU, ADR 013). The sides run in
turn, --rounds times, each keeping its fastest round, with the other sides' processes
stopped (SIGSTOP, bench/stopped.py). Written to docs/benchmarks.md.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.embed_throughput import sentences  # noqa: E402
from bench.overload import embedded_default, percentile  # noqa: E402
from bench.report import line_chart, write_report  # noqa: E402
from bench.stopped import cluster_stopped, process_tree, stopped  # noqa: E402
from tests.fixtures.cluster import free_port, running_app  # noqa: E402

INFINITY = "infinity-emb[server,torch]==0.0.78"
VENV = ROOT / "bench" / ".venvs" / "infinity"
LEVELS = (1, 8, 32, 128)


def model_path() -> str:
    from deployments.models import load_catalog, resolve_weights
    from serve_app.kernel.settings import Settings

    return str(resolve_weights(load_catalog()["all-minilm-l6-v2"],
                               Settings(OCR_SIDECAR_API_KEY="bench")))


def sorted_forward(texts: list[str]) -> Callable[[], float]:
    """The model loaded once; each call gives the sentences/s of one pass of its own
    forward, length-sorted, 64 a batch, mean pooled."""
    tokenizer, model = _loaded()
    return _sorted_passes(tokenizer, model, texts)


def sorted_onnx_forward(texts: list[str]) -> Callable[[], float]:
    """The same on ONNX Runtime: the model's encoder exported as the Embedding exports it,
    the session on every core, length-sorted, 64 a batch padded, mean pooled."""
    import tempfile

    from deployments.engines.embedding.onnx_encoder import OnnxEncoder, export
    from deployments.engines.embedding.onnx_export import MODEL_FILE, session

    tokenizer, model = _loaded()
    with tempfile.TemporaryDirectory(prefix="embed-peer-onnx-") as folder:
        # The session reads the whole graph when it is made: the file need not outlive it
        # (each run left 90 MB in the temp dir before).
        export(model, 0, Path(folder))
        encoder = OnnxEncoder(session(Path(folder) / MODEL_FILE), model.config, 0)
    return _sorted_passes(tokenizer, encoder, texts)


def _loaded() -> tuple[Any, Any]:
    """The benchmark's model as a user loads it with transformers: tokenizer, model."""
    from transformers import AutoModel, AutoTokenizer

    path = model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def _sorted_passes(tokenizer: Any, encoder: Any, texts: list[str]) -> Callable[[], float]:
    """A timer of `encoder` (the torch model or its ONNX Runtime session, called alike)
    over the texts length-sorted, 64 a batch padded, mean pooled and normalized."""
    import torch

    def run(ordered: list[str]) -> None:
        for start in range(0, len(ordered), 64):
            batch = tokenizer(ordered[start:start + 64], padding=True, truncation=True,
                              return_tensors="pt")
            with torch.inference_mode():
                hidden = encoder(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1)
                torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    return _timed(run, sorted(texts, key=len))


def _timed(run: Callable[[list[str]], None], ordered: list[str]) -> Callable[[], float]:
    """Sentences/s of one pass of `run` over the length-sorted sentences, after a warm-up
    on every 16th of them (every length; a whole pass took 10-20 s of `make bench`), on
    the torch threads this process had when `run` was made: an Embedding engine built in
    the same process since (bench/embed_gap.py) leaves torch one (ADR 013)."""
    import torch

    threads = torch.get_num_threads()

    def timed() -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            run(ordered[::16])
            started = time.perf_counter()
            run(ordered)
            return len(ordered) / (time.perf_counter() - started)
        finally:
            torch.set_num_threads(before)

    return timed


async def load(url: str, path: str, headers: dict[str, str], texts: list[str],
               per_request: int, concurrency: int) -> tuple[float, float, float, int]:
    """(sentences/s, p50 s, p99 s, 503s retried) with `concurrency` clients over all
    texts; latency is from the first try to the answer."""
    import aiohttp

    chunks = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]
    latencies: list[float] = []
    refusals = [0]
    async with aiohttp.ClientSession(url, headers=headers, connector=aiohttp.TCPConnector(
            limit=concurrency), timeout=aiohttp.ClientTimeout(total=600)) as session:
        async def worker(mine: list[list[str]]) -> None:
            for chunk in mine:
                sent = time.perf_counter()
                while True:  # a 503 says when to retry; a client does, and it counts
                    async with session.post(path, json={"model": "all-minilm-l6-v2",
                                                        "input": chunk}) as response:
                        await response.read()
                        if response.status != 503:
                            assert response.status == 200, response.status
                            break
                        retry = float(response.headers.get("retry-after", "1"))
                    refusals[0] += 1
                    await asyncio.sleep(retry)
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        await asyncio.gather(*(worker(chunks[i::concurrency]) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return (len(texts) / elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99),
            refusals[0])


def measure(url: str, path: str, headers: dict[str, str], texts: list[str],
            per_request: int) -> dict[int, tuple[float, float, float, int]]:
    """Each concurrency sends at least 1,024 sentences and 8 requests a client (one and 8
    clients: the first 1,024; 32 and 128: all), which keeps `make bench` in its time."""
    asyncio.run(load(url, path, headers, texts[:256], per_request, 8))  # warm-up
    return {level: asyncio.run(load(url, path, headers,
                                    texts[:max(1024, 8 * level * per_request)],
                                    per_request, level))
            for level in LEVELS}


@contextmanager
def infinity_server() -> Iterator[tuple[str, int]]:
    """(URL, PID) of infinity-emb serving the benchmark's model, installed first if the
    venv lacks it; stopped on exit."""
    if not (VENV / "bin" / "infinity_emb").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--progress-bar", "off",
                        INFINITY], check=True)
    port = free_port()
    server = subprocess.Popen(
        [str(VENV / "bin" / "infinity_emb"), "v2", "--model-id", model_path(),
         "--served-model-name", "all-minilm-l6-v2", "--engine", "torch", "--device", "cpu",
         "--pooling-method", "mean", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "INFINITY_ANONYMOUS_USAGE_STATS": "0"})
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None:
                    raise RuntimeError("infinity_emb exited at start") from None
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(30)


def fastest(kept: dict[int, tuple[float, float, float, int]],
            new: dict[int, tuple[float, float, float, int]]
            ) -> dict[int, tuple[float, float, float, int]]:
    """Per concurrency, the round with the higher rate, its latencies and 503s with it."""
    return {level: max(kept.get(level, new[level]), new[level]) for level in new}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=4096)
    parser.add_argument("--per-request", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    texts = sentences(args.sentences)
    direct, one_pass = 0.0, sorted_forward(texts)
    direct_onnx, onnx_pass = 0.0, sorted_onnx_forward(texts)
    ours: dict[int, tuple[float, float, float, int]] = {}
    peer: dict[int, tuple[float, float, float, int]] = {}
    # This VM's speed drifts within a run, and a slow spell only takes speed away: every
    # side runs once a round, in turn, and keeps its fastest round at each concurrency.
    # Both servers start once and are stopped (bench/stopped.py) while the other side
    # runs: a start of each a round took a minute of `make bench`.
    with infinity_server() as (peer_url, peer_pid), \
            running_app(embedded_default()) as (url, key):
        for _ in range(args.rounds):
            with cluster_stopped():  # both servers
                direct = max(direct, one_pass())
                direct_onnx = max(direct_onnx, onnx_pass())
            with cluster_stopped(besides={peer_pid}):
                peer = fastest(peer, measure(peer_url, "/embeddings", {}, texts,
                                             args.per_request))
            with stopped(process_tree(peer_pid)):
                ours = fastest(ours, measure(url, "/v1/embeddings", {"X-API-Key": key},
                                             texts, args.per_request))
    rows = []
    for level in LEVELS:
        (o, o50, o99, o503), (p, p50, p99, p503) = ours[level], peer[level]
        rows.append(f"| {level} | {o:.0f} ({o / direct:.2f} / {o / direct_onnx:.2f}) | "
                    f"{o50:.2f} / {o99:.2f} | {o503} "
                    f"| {p:.0f} ({p / direct:.2f}) | {p50:.2f} / {p99:.2f} | {p503} | "
                    f"**{o / p:.2f}** |")
    report = (
        f"MiniLM-L6 on the CPU (2 cores), {args.sentences} sentences of 6-14 words, "
        f"{args.per_request} per request, OpenAI-shaped requests to both servers; "
        f"the model's own length-sorted forward: {direct:.0f} sentences/s on torch (direct), "
        f"{direct_onnx:.0f} on ONNX Runtime (direct ONNX). ocr-graph with "
        f"config/local.yaml's Embedding (its encoder on ONNX Runtime, ADR 013), {INFINITY} "
        "with its defaults (torch). One and 8 clients "
        "send the first 1,024 sentences, 32 and 128 all of them. Each side ran "
        f"{args.rounds} rounds in turn (sorted forwards, infinity, ocr-graph), the other "
        "sides' processes stopped meanwhile, and keeps its fastest at each concurrency.\n\n"
        "| concurrency | ocr-graph sentences/s (of direct / of direct ONNX) | p50 / p99 s | "
        "503s retried | "
        "infinity sentences/s (of direct) | p50 / p99 s | 503s retried | ocr-graph / "
        "infinity |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "A 503 is retried after its Retry-After, as a client should; latency counts from "
        "the first try.\n")
    line_chart({"ocr-graph": [(level, ours[level][0]) for level in LEVELS],
                "infinity-emb": [(level, peer[level][0]) for level in LEVELS],
                "sorted forward": [(level, direct) for level in LEVELS],
                "sorted forward, ONNX Runtime": [(level, direct_onnx) for level in LEVELS]},
               ROOT / "docs" / "img" / "embed-peer.png",
               "Embeddings: sentences/s by client concurrency (MiniLM, 2 cores)",
               "concurrent clients", "sentences/s")
    report += "\n![sentences/s by concurrency](img/embed-peer.png)\n"
    print(report)
    write_report(report, "embed_peer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
