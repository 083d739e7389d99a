"""Health, readiness and fractional GPU placement as the Ray cluster really did it."""

from __future__ import annotations

import httpx
import pytest

from deployments.models import load_catalog
from tests.integration.conftest import GPU_TOTAL_MB, MAIN_OCR_ENGINES, TINY_OCR_MB

pytestmark = pytest.mark.integration


def test_health_and_readiness_need_no_key(anonymous: httpx.Client) -> None:
    assert anonymous.get("/healthz").json() == {"status": "ok", "deployments": {}}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200
    # No Rerank: the Ingress ranks by embedding similarity itself (ADR 015).
    assert set(ready.json()["deployments"]) == {
        "OCR", "Segmentation", "Embedding", "Trainer", "ResidencyController"}


def test_readiness_reads_what_serve_status_reports(anonymous: httpx.Client) -> None:
    """/readyz and the fixtures read the controller's details without serve.status()'s
    validation: each app's deployments, their statuses and replica counts must be what
    serve.status() says (three apps run here, so one app's state must not be another's)."""
    from ray import serve

    from serve_app.serve_state import application_state

    public = serve.status().applications
    assert set(public) == {"main", "tiny", "residency"}
    for app_name, overview in public.items():
        ours = application_state(app_name)
        assert ours is not None and ours.status == overview.status.value
        assert {name: (state.status, state.replicas) for name, state in
                ours.deployments.items()} == {
            name: (deployment.status.value, deployment.replica_states)
            for name, deployment in overview.deployments.items()}
    assert application_state("no-such-app") is None
    running = {name: state["running"]
               for name, state in anonymous.get("/readyz").json()["deployments"].items()}
    assert running == {name: deployment.replica_states.get("RUNNING", 0)
                       for name, deployment in public["main"].deployments.items()
                       if name != "Ingress"}


def test_replicas_get_their_fraction_of_the_gpu(client: httpx.Client) -> None:
    response = client.get("/v1/capacity")
    assert response.status_code == 200, response.text
    body = response.json()
    catalog = load_catalog()
    models = {m["deployment"]: m for m in body["models"]}
    # The OCR replica holds its extra engines too: its share is their sum.
    ocr_mb = catalog["rapidocr"].footprint_mb + sum(
        TINY_OCR_MB if name in ("archive-rec", "surya") else catalog[name].footprint_mb
        for name in MAIN_OCR_ENGINES)
    for name in ("OCR", "Segmentation", "Embedding"):
        model = models[name]
        footprint = ocr_mb if name == "OCR" else catalog[model["model"]].footprint_mb
        assert model["gpu_share"] == pytest.approx(footprint / GPU_TOTAL_MB, abs=1e-4)
        # Ray really assigned the (fake) GPU: CUDA sees device 0 in that replica.
        assert model["cuda_visible_devices"] == "0"
        # There is no real GPU here, so torch falls back to the CPU.
        assert model["device"] == "cpu"
    [rerank] = [model for model in body["models"] if model["kind"] == "rerank"]
    assert (rerank["deployment"], rerank["model"]) == ("Ingress", "embedding-similarity")
    assert rerank["gpu_share"] == 0.0 and rerank["device"] == "cpu"  # it holds no weights
    assert body["profile"] == "balanced" and body["llm_reserved_mb"] == 8192
    assert body["gpu_available"] is False and body["gpus"] == []


def test_models_route_lists_every_deployment(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    [ocr] = [m for m in models if m["deployment"] == "OCR"]
    assert ocr["engines"] == ["auto", "rapidocr", "llm", "tesseract", "ensemble", "kraken", "surya"]
    assert ocr["unavailable_engines"] == {}
    names = {m["deployment"]: m["model"] for m in models}
    assert names == {"OCR": "rapidocr", "Segmentation": "kraken-blla",
                     "Embedding": "all-minilm-l6-v2", "Ingress": "embedding-similarity"}


def test_openapi_documents_every_route(anonymous: httpx.Client) -> None:
    spec = anonymous.get("/openapi.json").json()
    for path in ("/v1/ocr", "/v1/ocr/upload", "/v1/segment", "/v1/embed", "/v1/rerank",
                 "/v1/capacity", "/v1/models", "/healthz", "/readyz"):
        assert path in spec["paths"], path
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]
