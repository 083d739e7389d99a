"""The Grafana dashboard asks only for metrics that exist: ours as the code defines them,
Ray Serve's as Ray's own source defines them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ray.serve

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ocr-graph.json"
DEFINED = re.compile(r"""(?:Counter|Gauge|Histogram)\(\s*f?["']([a-z_{}]+)["']""")
# Prometheus names: Ray prefixes ray_; counters get _total, histograms _bucket/_sum/_count.
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


def defined_metrics(*trees: Path) -> set[str]:
    names = set()
    for tree in trees:
        for source in tree.rglob("*.py"):
            for name in DEFINED.findall(source.read_text(encoding="utf-8")):
                names.add(name.replace("{protocol_name}", "http"))
    return {f"ray_{name}{suffix}" for name in names for suffix in SUFFIXES}


def asked_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\bray_[a-z_]+", expr)}


def test_every_metric_the_dashboard_asks_for_is_defined() -> None:
    ours = defined_metrics(ROOT / "deployments", ROOT / "serve_app")
    serves = defined_metrics(Path(ray.serve.__file__).parent / "_private")
    missing = asked_metrics() - ours - serves
    assert not missing


def test_the_dashboard_shows_capacity_and_work() -> None:
    asked = asked_metrics()
    for name in ("ray_ocr_graph_vram_total_mb", "ray_ocr_graph_vram_llm_mb",
                 "ray_ocr_graph_vram_ours_mb", "ray_ocr_graph_model_on_gpu",
                 "ray_ocr_graph_ocr_pages_total", "ray_ocr_graph_embedded_texts_total",
                 "ray_ocr_graph_front_refusals_total",
                 "ray_serve_deployment_request_counter_total",
                 "ray_serve_deployment_error_counter_total",
                 "ray_serve_deployment_processing_latency_ms_bucket"):
        assert name in asked, name
