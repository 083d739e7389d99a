"""Past one machine: two Ray nodes started as an operator would (`ray start --head`, then
`ray start --address` with resources of its own), the application deployed with `serve
deploy`, the Embedding placed on the second node, and requests answered through the
head's HTTP proxy. The nodes are this test's own processes: it stops them by PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from serve_app.front_door import CALLBACK, CALLBACK_ENV
from tests.fixtures.cluster import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "multinode-key-" + os.urandom(8).hex()
START_S = 300  # both nodes up, models loaded, the app ready


def node_ports() -> list[str]:
    """Ports two raylets on one machine must not share."""
    return [f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]


def ray_cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[dict[str, Any]]:
    temp = Path("/tmp") / f"ocrg-mn-{os.getpid()}"  # short: Ray's socket paths have a limit
    gcs, dashboard, http = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OCR_SIDECAR_API_KEY": KEY,
           "DATA_DIR": str(tmp_path / "data"), "RAY_USAGE_STATS_ENABLED": "0",
           CALLBACK_ENV: CALLBACK}  # as docs/operations.md tells operators
    env.pop("RAY_ADDRESS", None)
    try:
        ray_cli("start", "--head", f"--port={gcs}", f"--temp-dir={temp}", "--num-cpus=2",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}", "--disable-usage-stats", *node_ports(),
                env=env)
        ray_cli("start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                '--resources={"second_node": 1}', "--disable-usage-stats", *node_ports(),
                env=env)
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dashboard}", "http": http,
               "gcs": f"127.0.0.1:{gcs}"}
    finally:
        stop_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_processes_under(temp: Path) -> None:
    """Every process of these two nodes (their command lines name its temp dir), by PID."""
    ours = [p for p in psutil.process_iter(["pid", "cmdline"])
            if str(temp) in " ".join(p.info["cmdline"] or [])]
    for process in ours:
        for child in process.children(recursive=True):
            ours.append(child)
    for process in ours:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(ours, timeout=20)
    for process in alive:
        process.kill()


def serve_config(http_port: int) -> dict[str, Any]:
    """serve_config.yaml's shape, small: the Embedding must run on the second node."""
    small = {"ray_actor_options": {"num_cpus": 0.25}}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [{
            "name": "ocr-graph", "route_prefix": "/", "import_path": "serve_app.app:build_app",
            "args": {
                "ocr_model": None, "segmentation_model": None, "rerank_model": None,
                "training_model": None, "embedding_model": "all-minilm-l6-v2",
                "settings": {"RESIDENCY_PROFILE": "cpu-only"},
                "deployment_options": {
                    "Ingress": small, "ResidencyController": small,
                    "Embedding": {"ray_actor_options": {
                        "num_cpus": 0.5, "resources": {"second_node": 0.1}}}}}}]}


def test_serve_deploy_on_two_nodes_places_the_embedding_on_the_second(
        two_nodes: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "serve_config.yaml"
    config.write_text(yaml.safe_dump(serve_config(two_nodes["http"])))
    subprocess.run([str(BIN / "serve"), "deploy", str(config), "--address",
                    two_nodes["dashboard"]], env=two_nodes["env"], check=True, timeout=120,
                   cwd=ROOT)
    url = f"http://127.0.0.1:{two_nodes['http']}"
    deadline = time.monotonic() + START_S
    ready = None
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as client:
        while time.monotonic() < deadline:
            try:
                ready = client.get("/readyz")
            except httpx.TransportError:  # the proxy is not listening yet
                continue
            if ready.status_code == 200:
                break
        assert ready is not None and ready.status_code == 200, ready and ready.text
        embedded = client.post("/v1/embed", json={"texts": ["Grundbuch", "Erbschein"]})
        assert embedded.status_code == 200, embedded.text
        assert len(embedded.json()["data"]) == 2
        [embedding] = [m for m in client.get("/v1/models").json()
                       if m["deployment"] == "Embedding"]
    nodes = json.loads(ray_cli("list", "nodes", "--address", two_nodes["dashboard"],
                               "--format=json", "--detail", env=two_nodes["env"]))
    [second] = [n["node_id"] for n in nodes
                if "second_node" in (n.get("resources_total") or {})]
    assert embedding["node_id"] == second
