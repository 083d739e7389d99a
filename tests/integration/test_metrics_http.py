"""What the dashboard shows is really exported: after pages and texts went through the
graph, Ray's metrics endpoint on the node carries our counters and the VRAM gauges."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import ray

from tests.fixtures.documents import scan_png
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration
EXPORT_S = 60  # Ray exports metrics every few seconds; give it a generous bound


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample whose labels include `labels`."""
    for line in text.splitlines():
        found = re.match(rf"{name}\{{(.*)\}} ([0-9.e+-]+)$", line)
        if found and all(f'{key}="{value}"' in found.group(1) for key, value in labels.items()):
            return float(found.group(2))
    return None


def test_pages_embeddings_and_vram_reach_the_metrics_endpoint(client: httpx.Client) -> None:
    ocr = client.post("/v1/ocr/upload", files={"file": ("scan.png", scan_png())},
                      data={"options": json.dumps({"engine": "rapidocr"})})
    assert ocr.status_code == 200, ocr.text
    embed = client.post("/v1/embed", json={"texts": ["Erbschein", "Grundbuch", "Taufregister"]})
    assert embed.status_code == 200, embed.text
    [node] = [n for n in ray.nodes() if n["Alive"]]
    endpoint = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    text = until(lambda: httpx.get(endpoint, timeout=10).text, lambda text: all(
        value is not None for value in (
            sample(text, "ray_ocr_graph_ocr_pages_total", engine="rapidocr"),
            sample(text, "ray_ocr_graph_embedded_texts_total", application="main"),
            sample(text, "ray_ocr_graph_vram_total_mb", application="residency"))), EXPORT_S)
    assert (sample(text, "ray_ocr_graph_ocr_pages_total", engine="rapidocr") or 0) >= 1
    assert (sample(text, "ray_ocr_graph_embedded_texts_total", application="main") or 0) >= 3
    assert sample(text, "ray_ocr_graph_vram_total_mb", application="residency") == pytest.approx(
        24000)  # the /res app's simulated GPU
    assert sample(text, "ray_serve_deployment_request_counter_total", deployment="OCR")
