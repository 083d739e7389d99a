"""The llm OCR engine: a vision LLM reads the page image.

Typhoon-OCR-style models return the page's text; the request's system prompt, DMS tags
and runtime parameters go into every call unchanged, and keep_alive comes from the
residency profile, never from the client. The catalog entry's `api` picks the protocol:
Ollama's /api/chat (default) or /api/generate, or an OpenAI-compatible
/v1/chat/completions (vLLM, Ollama's own /v1, ...). One shared httpx.AsyncClient per
replica.
"""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx
import numpy as np

from deployments.models import ModelSpec
from serve_app.kernel.errors import BadGateway, UpstreamTimeout
from serve_app.kernel.pages import Line
from serve_app.kernel.settings import Settings

DEFAULT_SYSTEM_PROMPT = (
    "You are an OCR engine for an archive. Transcribe all text on the page exactly as "
    "written, line by line, in reading order. Output only the transcription."
)
Api = Literal["chat", "generate", "openai"]
PATHS: dict[Api, str] = {"chat": "/api/chat", "generate": "/api/generate",
                         "openai": "/v1/chat/completions"}


@dataclass(frozen=True)
class PageCall:
    """What every protocol sends for one page."""

    model: str
    system: str
    prompt: str
    image_png_b64: str
    params: dict[str, Any]
    keep_alive: str


def request_body(api: Api, call: PageCall) -> dict[str, Any]:
    """The protocol's JSON body. Ollama takes the parameters as `options`, an OpenAI
    server as top-level fields (temperature, top_p, max_tokens, ...), both as given."""
    if api == "chat":
        return {"model": call.model, "stream": False, "options": call.params,
                "keep_alive": call.keep_alive,
                "messages": [{"role": "system", "content": call.system},
                             {"role": "user", "content": call.prompt,
                              "images": [call.image_png_b64]}]}
    if api == "generate":
        return {"model": call.model, "stream": False, "options": call.params,
                "keep_alive": call.keep_alive, "system": call.system, "prompt": call.prompt,
                "images": [call.image_png_b64]}
    # The OpenAI API has no keep_alive, and strict servers refuse unknown fields: residency
    # reaches the LLM's memory through Ollama's own APIs only.
    return {**call.params, "model": call.model, "stream": False,
            "messages": [{"role": "system", "content": call.system},
                         {"role": "user", "content": [
                             {"type": "text", "text": call.prompt},
                             {"type": "image_url", "image_url": {
                                 "url": f"data:image/png;base64,{call.image_png_b64}"}}]}]}


def answer_text(api: Api, answer: dict[str, Any]) -> str:
    if api == "chat":
        return str(answer.get("message", {}).get("content", ""))
    if api == "generate":
        return str(answer.get("response", ""))
    choices = answer.get("choices") or [{}]
    return str(choices[0].get("message", {}).get("content") or "")


def upstream_error(response: httpx.Response) -> str:
    """Ollama says {"error": "..."}, OpenAI servers {"error": {"message": "..."}}."""
    try:
        error = response.json().get("error", response.text)
    except (ValueError, AttributeError):
        return response.text
    return str(error.get("message", error) if isinstance(error, dict) else error)


class OllamaVlmEngine:
    """Sends one page image per call; the answer's lines become the page's lines."""

    name: ClassVar[str] = "llm"
    reads_baselines: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self.api: Api = spec.options.get("api", "chat")
        if self.api not in PATHS:
            raise ValueError(f"model {spec.name!r}: api must be one of {sorted(PATHS)}")
        self.url = str(spec.options.get("url") or settings.ollama_url).rstrip("/")
        self.model = str(spec.options.get("model", spec.name))
        self.timeout_s = settings.ollama_timeout_s
        headers = ({"Authorization": f"Bearer {settings.llm_api_key.get_secret_value()}"}
                   if settings.llm_api_key else {})
        self.client = httpx.AsyncClient(timeout=settings.ollama_timeout_s, headers=headers)

    def move(self, device: str) -> None:
        """The weights live in the LLM server; keep_alive is how residency reaches them."""

    async def close(self) -> None:
        await self.client.aclose()

    def page_call(self, image: np.ndarray, llm: dict[str, Any], keep_alive: str) -> PageCall:
        """The client's prompt, tags and parameters, the page as PNG, our keep_alive."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        prompt = "Transcribe this page."
        if llm.get("dms_tags"):
            prompt += " Document tags: " + ", ".join(llm["dms_tags"]) + "."
        return PageCall(model=llm.get("model") or self.model,
                        system=llm.get("system_prompt") or DEFAULT_SYSTEM_PROMPT,
                        prompt=prompt, image_png_b64=base64.b64encode(buffer.getvalue()).decode(),
                        params=dict(llm.get("runtime_params") or {}), keep_alive=keep_alive)

    async def recognize(self, image: np.ndarray, options: dict[str, Any]) -> list[Line]:
        # PNG encoding is CPU work: off the event loop, so pages overlap.
        call = await asyncio.to_thread(self.page_call, image, options.get("llm") or {},
                                       options["keep_alive"])
        try:
            response = await self.client.post(self.url + PATHS[self.api],
                                              json=request_body(self.api, call))
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"the LLM did not answer within {self.timeout_s} s") from None
        except httpx.HTTPError as exc:
            raise BadGateway(f"the LLM at {self.url} cannot be reached: {exc}") from None
        if response.status_code != 200:
            raise BadGateway(f"the LLM answered {response.status_code}: "
                             f"{upstream_error(response)}",
                             {"upstream_status": response.status_code})
        try:
            text = answer_text(self.api, response.json())
        except ValueError:
            raise BadGateway("the LLM answered with something that is not JSON") from None
        height, width = image.shape[:2]
        return [Line(text=line.strip(), bbox=(0.0, 0.0, float(width), float(height)),
                     polygon=None, confidence=None)
                for line in text.splitlines() if line.strip()]
