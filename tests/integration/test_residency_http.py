"""The LLM takes the GPU while our replicas sit idle, and they leave it with no request
sent; they come back when it unloads. A fake 24 GB GPU whose LLM share is read from a fake
Ollama's /api/ps and whose share of ours is what the replicas report holding; the real
controller and replica in between."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration
# Controller polls allowed for a replica to follow (the bound: 3 polls plus the
# move's own time), and one more for the controller to read the replica's new report.
MAX_POLLS = 4
MAX_WAIT_POLLS = 400  # a bound on the test's own waiting, far above any expected number


def _state(client: httpx.Client) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """(controller polls, the Embedding replica's report, the fake GPU)."""
    capacity = client.get("/res/v1/capacity").json()
    [model] = [m for m in capacity["models"] if m["deployment"] == "Embedding"]
    return capacity["polls"], model, capacity["gpus"][0]


def _ours(gpu: dict[str, Any]) -> int:
    [ours] = [p["used_mb"] for p in gpu["processes"] if p["name"] == "ocr-graph"]
    return int(ours)


def _polls_until(client: httpx.Client, device: str) -> tuple[int, dict[str, Any]]:
    """Controller polls from the first capacity read until the replica reports `device`
    and the GPU shows what it holds then; no model request is sent while waiting."""
    start, model, gpu = _state(client)
    polls = start
    while model["device"] != device or _ours(gpu) != model["held_mb"]:
        assert polls - start <= MAX_WAIT_POLLS, f"still {model['device']}, {_ours(gpu)} MB"
        polls, model, gpu = _state(client)
    return polls - start, gpu


def test_idle_replicas_leave_the_gpu_for_the_llm_and_return(client: httpx.Client,
                                                            ollama: FakeOllama) -> None:
    _polls_until(client, "cuda")  # at rest, the model holds its share of the GPU
    _, model, gpu = _state(client)
    assert _ours(gpu) == model["footprint_mb"] == model["held_mb"] > 0
    assert gpu["placements"]["Embedding"]["device"] == "gpu"

    ollama.load("qwen2.5vl:32b", 23_000)  # 24000 - 23000 - 300 < low watermark 2048
    waited, gpu = _polls_until(client, "cpu")
    assert waited <= MAX_POLLS, f"the idle replica took {waited} polls to leave"
    assert gpu["llm_used_mb"] == 23_000 and _ours(gpu) == 0
    capacity = client.get("/res/v1/capacity").json()
    assert "low watermark" in capacity["decisions"][0]["reason"]
    assert capacity["llm_keep_alive"]["busy"] == "0"  # no room: the VLM leaves per page
    assert client.post("/res/v1/embed", json={"texts": ["Brief vom Amt"]}).status_code == 200

    ollama.unload()
    _polls_until(client, "cuda")
    capacity = client.get("/res/v1/capacity").json()
    assert capacity["decisions"][0]["device"] == "gpu"
    assert "stayed above" in capacity["decisions"][0]["reason"]
    assert capacity["llm_keep_alive"]["busy"] != "0"
    assert client.post("/res/v1/embed", json={"texts": ["Brief vom Amt"]}).status_code == 200
    [model] = [m for m in client.get("/res/v1/models").json() if m["deployment"] == "Embedding"]
    assert model["moves"] >= 2
