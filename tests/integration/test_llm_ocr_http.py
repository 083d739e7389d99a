"""engine=llm through a fake Ollama that speaks /api/chat and records what it received."""

from __future__ import annotations

import base64

import httpx
import pytest

from deployments.residency.profiles import load_profile
from tests.fixtures.documents import pages_pdf, scanned_pdf
from tests.fixtures.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration

LLM = {"model": "scb10x/typhoon-ocr-7b", "system_prompt": "Transkribiere genau.",
       "dms_tags": ["Testament", "Familie Müller"],
       "runtime_params": {"temperature": 0.1, "top_p": 0.6, "repeat_penalty": 1.1,
                          "num_predict": 2048}}


@pytest.fixture
def fresh(ollama: FakeOllama):  # type: ignore[no-untyped-def]
    for calls in (ollama.chats, ollama.paths, ollama.headers):
        calls.clear()
    ollama.status, ollama.reply = 200, "ERSTE ZEILE\nZWEITE ZEILE"
    yield ollama
    ollama.hang.clear()
    ollama.released.set()
    ollama.released.clear()


def test_llm_engine_sends_the_request_options_and_the_computed_keep_alive(
    client: httpx.Client, upload, fresh: FakeOllama
) -> None:
    path = upload("llm/scan.pdf", scanned_pdf())
    response = client.post("/v1/ocr", json={"source": {"path": path}, "engine": "llm",
                                            "dpi": 72, "llm": LLM})
    assert response.status_code == 200, response.text
    [page] = response.json()["pages"]
    assert page["engine"] == "llm" and page["text"] == "ERSTE ZEILE\nZWEITE ZEILE"
    assert page["lines"][0].get("confidence") is None  # a VLM gives no confidence
    [chat] = fresh.chats
    assert fresh.paths == ["/api/chat"]
    assert chat["model"] == LLM["model"] and chat["stream"] is False
    assert chat["options"] == LLM["runtime_params"]  # passed through, nothing added
    # The last (here: only) page of ours in flight: the profile's idle keep_alive, as the
    # controller computed it (no GPU seen here: the profile's values), not the client's.
    assert chat["keep_alive"] == load_profile("balanced").llm_keep_alive_idle
    system, user = chat["messages"]
    assert system == {"role": "system", "content": "Transkribiere genau."}
    assert "Testament" in user["content"] and "Familie Müller" in user["content"]
    assert base64.b64decode(user["images"][0]).startswith(b"\x89PNG")


def test_every_page_is_sent_with_the_same_options(client: httpx.Client, fresh: FakeOllama
                                                  ) -> None:
    response = client.post("/v1/ocr/upload", files={"file": ("three.pdf", pages_pdf(3))},
                           data={"options": '{"engine": "llm", "dpi": 72, "llm": {"dms_tags": '
                                            '["Rechnung"]}}'})
    assert response.status_code == 200, response.text
    assert len(response.json()["pages"]) == 3 and len(fresh.chats) == 3
    assert all("Rechnung" in chat["messages"][1]["content"] for chat in fresh.chats)
    assert {chat["model"] for chat in fresh.chats} == {"scb10x/typhoon-ocr-7b"}


def test_a_client_keep_alive_is_refused(client: httpx.Client, fresh: FakeOllama) -> None:
    for llm in ({"runtime_params": {"keep_alive": "24h"}}, {"keep_alive": "24h"}):
        response = client.post("/v1/ocr", json={"source": {"path": "x.pdf"}, "engine": "llm",
                                                "llm": llm})
        assert response.status_code == 422, response.text
    assert fresh.chats == []


def test_upstream_error_is_502_with_its_message(client: httpx.Client, upload,
                                                fresh: FakeOllama) -> None:
    fresh.status = 500
    path = upload("llm/error.pdf", scanned_pdf())
    response = client.post("/v1/ocr", json={"source": {"path": path}, "engine": "llm",
                                            "dpi": 72})
    assert response.status_code == 502, response.text
    assert "out of memory" in response.json()["error"]["message"]


def test_upstream_timeout_is_504(client: httpx.Client, upload, fresh: FakeOllama) -> None:
    fresh.hang.set()  # the fake answers only when released; the service waits 3 s
    path = upload("llm/slow.pdf", scanned_pdf())
    response = client.post("/v1/ocr", json={"source": {"path": path}, "engine": "llm",
                                            "dpi": 72})
    assert response.status_code == 504, response.text
