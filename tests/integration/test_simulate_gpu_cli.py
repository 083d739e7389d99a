"""`ocr-graph serve --simulate-gpu 24000 CONFIG`, the rehearsal an operator runs on a
laptop: its idle replicas leave the simulated GPU when Ollama's model takes it, with no
request sent. Runs the real command in a subprocess with a Ray of its own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.cluster import free_port, haproxy_env
from tests.fixtures.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration
KEY = "rehearsal-key-" + os.urandom(6).hex()
MAX_WAIT_POLLS = 300


@pytest.fixture
def rehearsal(tmp_path: Path) -> Iterator[tuple[httpx.Client, FakeOllama]]:
    ollama = FakeOllama().start()
    port = free_port()
    config = tmp_path / "rehearsal.yaml"
    config.write_text(yaml.safe_dump({
        "proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": "rehearsal", "route_prefix": "/", "import_path": "serve_app.app:build_app",
            "args": {"ocr_model": None, "segmentation_model": None, "rerank_model": None,
                     "training_model": None, "settings": {"RESIDENCY_POLL_S": 0.2},
                     "deployment_options": {name: {"ray_actor_options": {"num_cpus": 0.25}}
                                            for name in ("Embedding", "Ingress",
                                                         "ResidencyController")}}}]}))
    # Nothing of another cluster's environment (the session's, still running, set HAProxy's
    # ports and files): HAProxy gets its own, in a short dir (its socket paths are bounded).
    haproxy = Path(tempfile.mkdtemp(prefix="ocrg-"))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OCR_", "RESIDENCY_", "VRAM_", "RAY_ADDRESS",
                                  "RAY_SERVE_HAPROXY_", "RAY_SERVE_FALLBACK_"))}
    env.update({"OCR_SIDECAR_API_KEY": KEY, "DATA_DIR": str(tmp_path / "data"),
                "OLLAMA_URL": ollama.url, **haproxy_env(haproxy)})
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ocr-graph"), "serve", "--simulate-gpu", "24000",
         str(config)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:  # the command says when it serves
            said = [*said[-20:], line]
            if "serving on a simulated 24000 MB GPU" in line:
                break
        else:
            pytest.fail(f"ocr-graph serve --simulate-gpu exited with {process.wait()}:\n"
                        + "".join(said))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY},
                          timeout=60) as client:
            yield client, ollama
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        ollama.stop()
        shutil.rmtree(haproxy, ignore_errors=True)


def _embedding(client: httpx.Client) -> tuple[int, dict[str, Any], dict[str, Any]]:
    capacity = client.get("/v1/capacity").json()
    [model] = [m for m in capacity["models"] if m["deployment"] == "Embedding"]
    return capacity["polls"], model, capacity


def test_the_rehearsal_moves_idle_models_off_the_simulated_gpu(
        rehearsal: tuple[httpx.Client, FakeOllama]) -> None:
    client, ollama = rehearsal
    polls, model, capacity = _embedding(client)
    assert capacity["profile"] == "llm-first" and capacity["gpus"][0]["total_mb"] == 24000
    start = polls
    while model["device"] != "cuda":
        assert polls - start <= MAX_WAIT_POLLS
        polls, model, capacity = _embedding(client)
    ollama.load("qwen2.5vl:32b", 23_000)
    start = polls
    while model["device"] != "cpu":
        assert polls - start <= MAX_WAIT_POLLS
        polls, model, capacity = _embedding(client)
    assert polls - start <= 4, f"the idle replica took {polls - start} polls to leave"
    assert capacity["gpus"][0]["llm_used_mb"] == 23_000
    assert client.post("/v1/embed", json={"texts": ["Probe"]}).status_code == 200
