"""Past one machine: two Ray nodes started as an operator would (`ray start --head`, then
`ray start --address` with resources of its own), the application deployed with `serve
deploy`, the Embedding placed on the second node, and requests answered through the
head's HTTP front (HAProxy). Each node has one logical GPU, a fake of 24 GB whose LLM share is its
own Ollama's (VRAM_FAKE_OLLAMA_URL in the node's environment): the residency controller
decides each node's GPU from what is on that node. The nodes are this test's own
processes: it stops them by PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from deployments.residency.monitors import NODE_OLLAMA_ENV
from serve_app.front_door import NODE_ENV
from tests.fixtures.cluster import free_port, haproxy_env
from tests.fixtures.fake_ollama import FakeOllama
from tests.fixtures.waiting import until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KEY = "multinode-key-" + os.urandom(8).hex()
START_S = 300  # both nodes up, models loaded, the app ready
GPU_MB = 24000  # each node's fake GPU


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


@pytest.fixture(scope="module")
def llms() -> Iterator[tuple[FakeOllama, FakeOllama]]:
    """The LLM on each node's (fake) GPU: an Ollama per node, as NVML would see it there."""
    head, second = FakeOllama().start(), FakeOllama().start()
    yield head, second
    head.stop()
    second.stop()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory, llms: tuple[FakeOllama, FakeOllama]
              ) -> Iterator[dict[str, Any]]:
    temp = Path("/tmp") / f"ocrg-mn-{os.getpid()}"  # short: Ray's socket paths have a limit
    gcs, dashboard, http = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OCR_SIDECAR_API_KEY": KEY,
           "DATA_DIR": str(tmp_path_factory.mktemp("data")), "RAY_USAGE_STATS_ENABLED": "0",
           **NODE_ENV, **haproxy_env(temp)}  # NODE_ENV: as docs/operations.md tells operators
    env.pop("RAY_ADDRESS", None)
    try:
        # One logical GPU per node; each node's fake GPU reads its own Ollama's models.
        ray_cli("start", "--head", f"--port={gcs}", f"--temp-dir={temp}", "--num-cpus=2",
                "--num-gpus=1", '--resources={"first_node": 1}',
                "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}", "--disable-usage-stats", *node_ports(),
                env={**env, NODE_OLLAMA_ENV: llms[0].url})
        ray_cli("start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2", "--num-gpus=1",
                '--resources={"second_node": 1}', "--disable-usage-stats", *node_ports(),
                env={**env, NODE_OLLAMA_ENV: llms[1].url})
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


def serve_config(http_port: int, head_ollama: str) -> dict[str, Any]:
    """serve_config.yaml's shape, small: the OCR and the residency controller on the head,
    the Embedding on the second node, each node's logical GPU a fake of 24 GB."""
    small = {"ray_actor_options": {"num_cpus": 0.25}}

    def on(node: str, cpus: float) -> dict[str, Any]:
        return {"ray_actor_options": {"num_cpus": cpus, "resources": {node: 0.1}}}

    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [{
            "name": "ocr-graph", "route_prefix": "/", "import_path": "serve_app.app:build_app",
            "args": {
                "ocr_model": "rapidocr", "ocr_engines": [], "segmentation_model": None,
                "rerank_model": None, "training_model": None,
                "embedding_model": "all-minilm-l6-v2", "gpu_total_mb": GPU_MB,
                "settings": {"RESIDENCY_PROFILE": "test-fast", "RESIDENCY_POLL_S": 0.2,
                             "VRAM_FAKE_TOTAL_MB": GPU_MB, "OLLAMA_URL": head_ollama},
                "profiles": {"test-fast": {"llm_reserved_mb": 8192, "low_watermark_mb": 2048,
                                           "high_watermark_mb": 4096, "hold_s": 1.0}},
                "deployment_options": {
                    "Ingress": small, "ResidencyController": on("first_node", 0.25),
                    "OCR": on("first_node", 0.25), "Embedding": on("second_node", 0.5)}}}]}


@pytest.fixture(scope="module")
def deployed(two_nodes: dict[str, Any], llms: tuple[FakeOllama, FakeOllama],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """`serve deploy` of the config; a client once /readyz says every deployment runs."""
    config = tmp_path_factory.mktemp("config") / "serve_config.yaml"
    config.write_text(yaml.safe_dump(serve_config(two_nodes["http"], llms[0].url)))
    # `ray start` returns before the dashboard's Serve module (a subprocess of its own)
    # answers: an operator's script, like this one, waits for it before deploying.
    until(lambda: serve_api_status(two_nodes["dashboard"]), lambda status: status == 200,
          within_s=120)
    done = subprocess.run([str(BIN / "serve"), "deploy", str(config), "--address",
                           two_nodes["dashboard"]], env=two_nodes["env"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
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
        yield client


def serve_api_status(dashboard: str) -> int:
    """The status of the dashboard's Serve API; 0 while nothing listens."""
    try:
        return httpx.get(f"{dashboard}/api/serve/applications/", timeout=10).status_code
    except httpx.TransportError:
        return 0


def test_serve_deploy_on_two_nodes_places_the_embedding_on_the_second(
        two_nodes: dict[str, Any], deployed: httpx.Client) -> None:
    embedded = deployed.post("/v1/embed", json={"texts": ["Grundbuch", "Erbschein"]})
    assert embedded.status_code == 200, embedded.text
    assert len(embedded.json()["data"]) == 2
    nodes = json.loads(ray_cli("list", "nodes", "--address", two_nodes["dashboard"],
                               "--format=json", "--detail", env=two_nodes["env"]))
    [second] = [n["node_id"] for n in nodes
                if "second_node" in (n.get("resources_total") or {})]
    assert node_of(deployed, "Embedding") == second
    assert node_of(deployed, "OCR") != second


def test_the_residency_controller_decides_each_node_s_gpu_from_that_node_s_llm(
        deployed: httpx.Client, llms: tuple[FakeOllama, FakeOllama]) -> None:
    """The LLM fills the head's GPU: the OCR there leaves it, the Embedding on the second
    node's GPU stays; then the second node's LLM grows and the Embedding leaves too."""
    head_ollama, second_ollama = llms
    head_gpu = f"{node_of(deployed, 'OCR')}:0"
    second_gpu = f"{node_of(deployed, 'Embedding')}:0"
    assert head_gpu != second_gpu
    placed_on = capacity_until(deployed, lambda gpus: gpus.get(head_gpu, {}).get("OCR") == "gpu"
                               and gpus.get(second_gpu, {}).get("Embedding") == "gpu")
    assert set(placed_on) == {head_gpu, second_gpu}  # one fake GPU per node
    try:
        head_ollama.load("qwen2.5vl:32b", GPU_MB - 1000)
        capacity_until(deployed, lambda gpus: gpus[head_gpu]["OCR"] == "cpu")
        # Polls on: the second node's GPU, whose LLM holds nothing, keeps its model.
        later = capacity_until(deployed, lambda gpus: True, polls_ahead=5)
        assert later[second_gpu]["Embedding"] == "gpu"
        second_ollama.load("qwen2.5vl:32b", GPU_MB - 1000)
        capacity_until(deployed, lambda gpus: gpus[second_gpu]["Embedding"] == "cpu")
        served = deployed.post("/v1/embed", json={"texts": ["Grundbuch"]})
        assert served.status_code == 200, served.text  # on the CPU now, still answering
    finally:
        head_ollama.unload()
        second_ollama.unload()


def node_of(client: httpx.Client, deployment: str) -> str:
    [model] = [m for m in client.get("/v1/models").json() if m["deployment"] == deployment]
    return str(model["node_id"])


def capacity_until(client: httpx.Client, done: Callable[[dict[str, dict[str, str]]], bool],
                   polls_ahead: int = 0, within_s: float = 90) -> dict[str, dict[str, str]]:
    """{GPU key: {deployment: placement}} from /v1/capacity once `done` holds for it (and
    the controller has polled `polls_ahead` more times)."""
    first_polls = client.get("/v1/capacity").json()["polls"]
    body = until(lambda: client.get("/v1/capacity").json(),
                 lambda body: done(placements(body)) and (
                     body["polls"] >= first_polls + polls_ahead), within_s)
    return placements(body)


def placements(capacity: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {gpu["key"]: {name: placement["device"]
                         for name, placement in gpu["placements"].items()}
            for gpu in capacity["gpus"]}
