"""The llm OCR engine: a vision LLM behind Ollama's /api/chat reads the page image.

Typhoon-OCR-style models return the page's text; the request's system prompt, DMS tags
and runtime parameters go into every call unchanged, and keep_alive comes from the
residency profile, never from the client. One shared httpx.AsyncClient per replica.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import httpx
import numpy as np

from deployments.models import ModelSpec
from serve_app.errors import BadGateway, UpstreamTimeout
from serve_app.settings import Settings

DEFAULT_SYSTEM_PROMPT = (
    "You are an OCR engine for an archive. Transcribe all text on the page exactly as "
    "written, line by line, in reading order. Output only the transcription."
)


class OllamaVlmEngine:
    """Sends one page image per /api/chat call; the answer's lines become the page's lines."""

    name = "llm"

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self.url = settings.ollama_url.rstrip("/")
        self.model = str(spec.options.get("model", spec.name))
        self.timeout_s = settings.ollama_timeout_s
        self.client = httpx.AsyncClient(timeout=settings.ollama_timeout_s)

    def move(self, device: str) -> None:
        """The weights live in Ollama; keep_alive is how residency reaches them."""

    async def close(self) -> None:
        await self.client.aclose()

    def request_body(self, image: np.ndarray, llm: dict[str, Any], keep_alive: str
                     ) -> dict[str, Any]:
        """The /api/chat body: the client's prompt, tags and parameters, our keep_alive."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        prompt = "Transcribe this page."
        if llm.get("dms_tags"):
            prompt += " Document tags: " + ", ".join(llm["dms_tags"]) + "."
        return {
            "model": llm.get("model") or self.model,
            "messages": [
                {"role": "system", "content": llm.get("system_prompt") or DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": prompt,
                 "images": [base64.b64encode(buffer.getvalue()).decode()]},
            ],
            "stream": False,
            "options": dict(llm.get("runtime_params") or {}),
            "keep_alive": keep_alive,
        }

    async def recognize(self, image: np.ndarray, options: dict[str, Any]) -> list[dict[str, Any]]:
        # PNG encoding is CPU work: off the event loop, so pages overlap.
        body = await asyncio.to_thread(self.request_body, image, options.get("llm") or {},
                                       options["keep_alive"])
        try:
            response = await self.client.post(f"{self.url}/api/chat", json=body)
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"the LLM did not answer within {self.timeout_s} s") from None
        except httpx.HTTPError as exc:
            raise BadGateway(f"the LLM at OLLAMA_URL cannot be reached: {exc}") from None
        if response.status_code != 200:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise BadGateway(f"the LLM answered {response.status_code}: {message}",
                             {"upstream_status": response.status_code})
        text = response.json().get("message", {}).get("content", "")
        height, width = image.shape[:2]
        return [{"text": line.strip(), "bbox": (0.0, 0.0, float(width), float(height)),
                 "polygon": None, "confidence": None}
                for line in text.splitlines() if line.strip()]
