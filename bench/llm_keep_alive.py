"""What keep_alive "0" costs: the VLM reloaded for every gap between pages.

    python bench/llm_keep_alive.py [--documents 8] [--load 2.0] [--latency 0.2]

A fake Ollama that loads models as Ollama does (a request for an unloaded model waits
`--load` seconds; the model stays while requests run and, after the last one, for that
request's keep_alive) answers each page after `--latency` seconds. A backend sends
`--documents` one-page scans one after another, then one 8-page scan, through the
service's llm engine, twice: with the llm-first profile as it was (keep_alive "0" on
every page) and with the computed keep_alive (the profile's `llm_keep_alive_busy` while
more of our pages wait, `llm_keep_alive_idle` for the last; "0" only when free VRAM is
under the low watermark). Both runs use the service's defaults otherwise; there is no
GPU here, so the keep_alive comes from the profile's values. The result goes to
docs/benchmarks.md.
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
from tests.fixtures.cluster import LocalCluster, deploy, local_serve  # noqa: E402
from tests.fixtures.documents import pages_pdf  # noqa: E402
from tests.fixtures.fake_ollama import FakeOllama  # noqa: E402

# llm-first as it was before keep_alive was computed: the VLM left after every page.
ALWAYS_ZERO = {"llm_reserved_mb": 12288, "low_watermark_mb": 4096, "high_watermark_mb": 6144,
               "hold_s": 30, "llm_keep_alive_busy": "0", "llm_keep_alive_idle": "0"}


def run(cluster: LocalCluster, profile: str, documents: int, load_s: float,
        latency_s: float) -> tuple[float, int]:
    """(seconds for the whole workload, VLM loads), the app deployed afresh on `cluster`
    with its own fake Ollama: both runs share one Ray, whose start and stop took a
    quarter of the benchmark."""
    import httpx

    ollama = FakeOllama(latency_s=latency_s, load_s=load_s).start()
    small = {"ray_actor_options": {"num_cpus": 0.1}}
    args = {"segmentation_model": None, "embedding_model": None, "rerank_model": None,
            "training_model": None, "ocr_engines": ["ollama-vlm"],
            "settings": {"OLLAMA_URL": ollama.url, "RESIDENCY_PROFILE": profile},
            "profiles": {"always-zero": ALWAYS_ZERO},
            "deployment_options": {name: small for name in
                                   ("OCR", "Ingress", "ResidencyController")}}
    options = {"data": {"options": json.dumps({"engine": "llm", "dpi": 72,
                                                "formats": ["text"]})}}
    single, multi = pages_pdf(1), pages_pdf(8)
    try:
        deploy(args)
        with httpx.Client(base_url=cluster.url, headers={"X-API-Key": cluster.api_key},
                          timeout=600) as client:
            started = time.perf_counter()
            for _ in range(documents):
                client.post("/v1/ocr/upload", files={"file": ("one.pdf", single)},
                            **options).raise_for_status()
            client.post("/v1/ocr/upload", files={"file": ("eight.pdf", multi)},
                        **options).raise_for_status()
            return time.perf_counter() - started, ollama.loads
    finally:
        ollama.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--load", type=float, default=2.0)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    with local_serve() as cluster:
        zero = run(cluster, "always-zero", args.documents, args.load, args.latency)
        computed = run(cluster, "llm-first", args.documents, args.load, args.latency)
    report = (
        f"{args.documents} one-page scans one after another, then one 8-page scan, engine=llm; "
        f"a fake Ollama that takes {args.load:.1f} s to load the VLM and "
        f"{args.latency * 1000:.0f} ms per page, honouring keep_alive as Ollama does.\n\n"
        "| keep_alive | seconds | VLM loads |\n|---|---|---|\n"
        f"| \"0\" on every page (llm-first before) | {zero[0]:.1f} | {zero[1]} |\n"
        f"| computed (llm-first now: busy 2m, idle 30s; \"0\" under the low watermark) | "
        f"{computed[0]:.1f} | {computed[1]} |\n\n"
        f"The computed keep_alive takes **{computed[0] / zero[0]:.2f}** of the time.\n")
    print(report)
    write_report(report, "llm_keep_alive")


if __name__ == "__main__":
    main()
