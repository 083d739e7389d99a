"""One local Ray cluster with a fake GPU, the whole graph deployed once, HTTP on 127.0.0.1.

Three applications share the cluster: "main", the embedded default (rapidocr, kraken
blla, MiniLM, embedding-similarity rerank) plus the llm, tesseract, ensemble, kraken
and surya engines (random-weight kraken and surya models); "tiny" at /tiny, which serves the tiny
random XLM-R models through the real BGEM3FlagModel and FlagReranker paths and a
tesseract-only OCR; and "residency" at /res, an embedding on a fake GPU beside a fake
Ollama.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.trained_models import TrainedModels
from tests.fixtures.cluster import local_serve
from tests.fixtures.fake_ollama import FakeOllama

API_KEY = "integration-test-key-" + os.urandom(8).hex()
GPU_TOTAL_MB = 24000
SMALL = {"ray_actor_options": {"num_cpus": 0.25}}
# The random-weight kraken and surya models of the main app's OCR deployment.
TINY_OCR_MB = 50
MAIN_OCR_ENGINES = ["ollama-vlm", "tesseract", "ensemble", "archive-rec", "surya"]
TRAINING_TOKEN = "training-token-" + os.urandom(8).hex()
TRAINING_MIN_SAMPLES = 4
OVERLOAD_ONGOING, OVERLOAD_QUEUED = 2, 2  # the /res app's Embedding
# Pages per request: enough for a document the ingress's text-layer processes split.
MAX_PAGES = 40


@pytest.fixture(scope="session")
def ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def service(tiny_models: dict[str, str], ollama: FakeOllama) -> Iterator[dict[str, object]]:
    from ray import serve

    from serve_app.app import build_app

    env = {"OCR_SIDECAR_API_KEY": API_KEY, "OCR_MAX_PAGES": str(MAX_PAGES),
           "OCR_MAX_UPLOAD_BYTES": str(4 * 1024 * 1024), "EMBED_MAX_TEXTS": "64",
           "EMBED_MAX_TEXT_CHARS": "4000", "TRAINING_MIN_SAMPLES": str(TRAINING_MIN_SAMPLES),
           "TRAINING_MAX_UPLOAD_BYTES": str(16 * 1024 * 1024)}
    with local_serve(env, num_cpus=4, num_gpus=1) as cluster:
        # Version 1 of the trained recognition model: the random-weight kraken model.
        store = TrainedModels(cluster.data_dir / "state" / "models")
        store.publish("archive-rec", Path(tiny_models["kraken"]), {"kind": "train"})
        store.activate("archive-rec", 1)
        options = {name: SMALL for name in ("OCR", "Segmentation", "Embedding", "Rerank",
                                            "ResidencyController", "Ingress", "Trainer")}
        serve.run(build_app({"gpu_total_mb": GPU_TOTAL_MB, "deployment_options": options,
                             "ocr_engines": MAIN_OCR_ENGINES,
                             "models": {"archive-rec": {"kind": "ocr", "engine": "kraken",
                                                        "footprint_mb": TINY_OCR_MB,
                                                        "trained": "archive-rec"},
                                        "surya": {"kind": "ocr", "engine": "surya",
                                                  "footprint_mb": TINY_OCR_MB,
                                                  "path": tiny_models["surya"]}},
                             "settings": {"RESIDENCY_PROFILE": "balanced",
                                          "OLLAMA_URL": ollama.url, "OLLAMA_TIMEOUT_S": 3,
                                          "OCR_TRAINING_TOKEN": TRAINING_TOKEN}}),
                  name="main", route_prefix="/")
        serve.run(build_app({
            "gpu_total_mb": GPU_TOTAL_MB,
            "ocr_model": "tesseract",  # an OCR that lacks the other engines
            "segmentation_model": None,
            # A Trainer without OCR_TRAINING_TOKEN (training answers 503), on its own state.
            "settings": {"STATE_DIR": str(cluster.data_dir.parent / "tiny-state")},
            "embedding_model": "tiny-m3",
            "rerank_model": "tiny-reranker",
            "models": {
                "tiny-m3": {"kind": "embedding", "engine": "bge-m3", "footprint_mb": 100,
                            "path": tiny_models["m3"]},
                "tiny-reranker": {"kind": "rerank", "engine": "flag-reranker",
                                  "footprint_mb": 100, "path": tiny_models["reranker"]},
            },
            "deployment_options": options,
        }), name="tiny", route_prefix="/tiny")
        # An embedding-only app on a fake 24 GB GPU shared with a fake Ollama, polled fast.
        serve.run(build_app({
            "gpu_total_mb": GPU_TOTAL_MB, "ocr_model": None, "segmentation_model": None,
            "rerank_model": None, "training_model": None,
            # One request of EMBED_MAX_TEXTS fills its text budget: the gate test's door.
            "settings": {"RESIDENCY_PROFILE": "test-fast", "RESIDENCY_POLL_S": 0.1,
                         "VRAM_FAKE_TOTAL_MB": GPU_TOTAL_MB, "OLLAMA_URL": ollama.url,
                         "EMBED_MAX_TEXTS_IN_FLIGHT": 64},
            "profiles": {"test-fast": {"llm_reserved_mb": 8192, "low_watermark_mb": 2048,
                                       "high_watermark_mb": 4096, "hold_s": 1.0}},
            # A small bounded queue, so the overload test can fill it.
            "deployment_options": {**options, "Embedding": {
                **SMALL, "max_ongoing_requests": OVERLOAD_ONGOING,
                "max_queued_requests": OVERLOAD_QUEUED}},
        }), name="residency", route_prefix="/res")
        yield {"url": cluster.url, "upload_base": cluster.data_dir / "uploads",
               "data_dir": cluster.data_dir}


@pytest.fixture(scope="session")
def client(service: dict[str, object]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=str(service["url"]), headers={"X-API-Key": API_KEY},
                      timeout=300) as http:
        yield http


@pytest.fixture(scope="session")
def anonymous(service: dict[str, object]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=str(service["url"]), timeout=60) as http:
        yield http


@pytest.fixture
def upload(service: dict[str, object]):  # type: ignore[no-untyped-def]
    """Write bytes under the upload base; returns the path a client would send."""
    base = Path(str(service["upload_base"]))

    def put(name: str, data: bytes) -> str:
        target = base / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return name

    return put
