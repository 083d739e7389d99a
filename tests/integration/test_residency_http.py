"""The LLM takes the GPU, our embedding model leaves it, requests keep working, and it
comes back when the LLM unloads: a fake 24 GB GPU whose LLM share is read from a fake
Ollama's /api/ps, the real controller and replica in between."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration
MAX_POLLS = 30  # controller polls allowed for a reaction (it needs one or two)


def _embedding(client: httpx.Client) -> tuple[int, dict[str, object]]:
    capacity = client.get("/res/v1/capacity").json()
    [model] = [m for m in capacity["models"] if m["deployment"] == "Embedding"]
    return capacity["polls"], model


def _until_placement(client: httpx.Client, wanted: str, statuses: list[int]) -> int:
    """Send requests until the replica reports `wanted`; return the polls it took."""
    start, model = _embedding(client)
    polls = start
    while model["placement"] != wanted:
        assert polls - start <= MAX_POLLS, f"still {model['placement']} after {MAX_POLLS} polls"
        statuses.append(client.post("/res/v1/embed", json={"texts": ["Brief vom Amt"]})
                        .status_code)
        polls, model = _embedding(client)
    return polls - start


def test_embedding_leaves_the_gpu_for_the_llm_and_returns(client: httpx.Client,
                                                          ollama: FakeOllama) -> None:
    statuses: list[int] = []
    _until_placement(client, "gpu", statuses)  # at rest, the model is on the GPU share
    ollama.load("qwen2.5vl:32b", 23_000)        # 24000 - 23000 - 300 < low watermark 2048
    _until_placement(client, "cpu", statuses)
    capacity = client.get("/res/v1/capacity").json()
    assert capacity["gpus"][0]["llm_used_mb"] == 23_000
    assert "low watermark" in capacity["decisions"][0]["reason"]

    ollama.unload()
    _until_placement(client, "gpu", statuses)
    decisions = client.get("/res/v1/capacity").json()["decisions"]
    assert decisions[0]["device"] == "gpu" and "stayed above" in decisions[0]["reason"]
    assert set(statuses) <= {200}, statuses  # requests kept succeeding through the moves
    [model] = [m for m in client.get("/res/v1/models").json() if m["deployment"] == "Embedding"]
    assert model["moves"] >= 2
