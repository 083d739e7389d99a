"""The llm engine speaks Ollama's /api/chat and /api/generate and the OpenAI-compatible
/v1/chat/completions, against a fake server that answers in each one's real shape."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from deployments.engines.ocr.llm import OllamaVlmEngine
from deployments.models import load_catalog
from serve_app.kernel.errors import BadGateway
from serve_app.kernel.settings import Settings
from tests.fixtures.fake_ollama import FakeOllama

LLM = {"model": "typhoon-ocr", "system_prompt": "Transkribiere genau.",
       "dms_tags": ["Testament"], "runtime_params": {"temperature": 0.1, "max_tokens": 900}}
PAGE = np.full((40, 60, 3), 255, dtype=np.uint8)


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    fake = FakeOllama().start()
    yield fake
    fake.stop()


def _engine(clean_env: pytest.MonkeyPatch, server: FakeOllama, api: str,
            key: str | None = None) -> OllamaVlmEngine:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    clean_env.setenv("OLLAMA_URL", server.url)
    if key:
        clean_env.setenv("LLM_API_KEY", key)
    spec = load_catalog({"vlm": {"kind": "ocr", "engine": "llm", "footprint_mb": 0,
                                 "options": {"api": api, "model": "default-vlm"}}})["vlm"]
    return OllamaVlmEngine(spec, Settings.load(), "cpu")


def _read(engine: OllamaVlmEngine) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        try:
            return await engine.recognize(PAGE, {"llm": LLM, "keep_alive": "0"})
        finally:
            await engine.close()
    return asyncio.run(run())


def test_generate_sends_system_prompt_image_options_and_keep_alive(
        clean_env: pytest.MonkeyPatch, server: FakeOllama) -> None:
    lines = _read(_engine(clean_env, server, "generate"))
    assert [line["text"] for line in lines] == ["ERSTE ZEILE", "ZWEITE ZEILE"]
    [body] = server.chats
    assert server.paths == ["/api/generate"]
    assert body["system"] == "Transkribiere genau." and "Testament" in body["prompt"]
    assert body["options"] == LLM["runtime_params"] and body["keep_alive"] == "0"
    assert base64.b64decode(body["images"][0]).startswith(b"\x89PNG")
    assert body["model"] == "typhoon-ocr" and body["stream"] is False


def test_openai_compatible_server_gets_a_data_url_and_the_bearer_key(
        clean_env: pytest.MonkeyPatch, server: FakeOllama) -> None:
    lines = _read(_engine(clean_env, server, "openai", key="vllm-secret"))
    assert [line["text"] for line in lines] == ["ERSTE ZEILE", "ZWEITE ZEILE"]
    [body] = server.chats
    assert server.paths == ["/v1/chat/completions"]
    assert server.headers[0]["Authorization"] == "Bearer vllm-secret"
    assert body["temperature"] == 0.1 and body["max_tokens"] == 900  # top level, as given
    assert "keep_alive" not in body and "options" not in body  # not OpenAI fields
    system, user = body["messages"]
    assert system == {"role": "system", "content": "Transkribiere genau."}
    text, image = user["content"]
    assert "Testament" in text["text"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("api", ["chat", "generate", "openai"])
def test_an_upstream_error_is_502_with_its_message_in_any_protocol(
        clean_env: pytest.MonkeyPatch, server: FakeOllama, api: str) -> None:
    server.status = 500
    with pytest.raises(BadGateway, match="500: model runner crashed: out of memory"):
        _read(_engine(clean_env, server, api))


def test_an_unknown_protocol_is_refused_at_start(clean_env: pytest.MonkeyPatch,
                                                server: FakeOllama) -> None:
    with pytest.raises(ValueError, match="api must be one of"):
        _engine(clean_env, server, "grpc")
