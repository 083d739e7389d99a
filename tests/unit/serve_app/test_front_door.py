"""The front door in Serve's proxy: an exact count of requests in flight, refusals at once
in the one error body, health probes always let through, and the proxy's own plain-text
answers rewritten; everything else passes through untouched."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from serve_app.front_door import FrontDoor, middlewares

SERVE_TIMEOUT = b"Request 7f3a timed out after 30.0s."


def answering(status: int, content_type: bytes, chunks: list[bytes],
              extra: list[tuple[bytes, bytes]] | None = None):  # type: ignore[no-untyped-def]
    """An ASGI app answering like Serve's proxy does: start, then the body in chunks."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type),
                                (b"content-length", str(sum(map(len, chunks))).encode()),
                                (b"x-request-id", b"7f3a"), *(extra or [])]})
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk,
                        "more_body": index < len(chunks) - 1})
    return app


async def call(door: Any, path: str = "/v1/embed") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await door({"type": "http", "path": path, "headers": []}, receive, send)
    return sent


def test_a_proxy_answer_in_plain_text_becomes_the_error_body_with_its_headers() -> None:
    door = FrontDoor(answering(408, b"text/plain; charset=utf-8",
                               [SERVE_TIMEOUT[:10], SERVE_TIMEOUT[10:]],
                               [(b"retry-after", b"2")]))
    sent = asyncio.run(call(door))
    start, body = sent[0], sent[-1]
    headers = dict(start["headers"])
    assert start["status"] == 408 and headers[b"retry-after"] == b"2"
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body["body"])
    error = orjson.loads(body["body"])["error"]
    assert error["code"] == "upstream_timeout" and error["request_id"] == "7f3a"
    assert "timed out after 30.0s" in error["message"]
    assert len(sent) == 2 and body["more_body"] is False


def test_the_ingress_answers_and_serves_own_endpoints_pass_untouched() -> None:
    ours = orjson.dumps({"error": {"code": "overloaded", "message": "Embedding is full"}})
    for app, path in ((answering(503, b"application/json", [ours]), "/v1/embed"),
                      (answering(200, b"application/json", [b"{}"]), "/v1/embed"),
                      (answering(503, b"text/plain", [b"unhealthy"]), "/-/healthz")):
        assert asyncio.run(call(FrontDoor(app), path)) == asyncio.run(call(app, path))


def test_beyond_max_requests_in_flight_the_next_is_refused_at_once_and_health_let_in(
) -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        entered = 0

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            nonlocal entered
            entered += 1
            await release.wait()
            await answering(200, b"application/json", [b"{}"])(scope, receive, send)

        door = FrontDoor(slow, max_requests=2)
        held = [asyncio.create_task(call(door)) for _ in range(2)]
        while entered < 2:  # both are inside the app
            await asyncio.sleep(0)
        refused = await call(door)
        assert refused[0]["status"] == 503 and entered == 2
        headers = dict(refused[0]["headers"])
        assert headers[b"retry-after"] == b"2"
        error = orjson.loads(refused[-1]["body"])["error"]
        assert error["code"] == "overloaded" and error["detail"] == {"in_flight": 2}
        assert error["request_id"] == headers[b"x-request-id"].decode()
        probe = asyncio.create_task(call(door, "/readyz"))
        while entered < 3:  # the health probe went in although two are in flight
            await asyncio.sleep(0)
        release.set()
        for task in [*held, probe]:
            assert (await task)[0]["status"] == 200
        assert (await call(door))[0]["status"] == 200  # the slots are free again
        assert door.in_flight == 0

    asyncio.run(scenario())


def test_a_request_that_fails_inside_frees_its_slot() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("replica gone")

    door = FrontDoor(broken, max_requests=1)
    with pytest.raises(RuntimeError):
        asyncio.run(call(door))
    assert door.in_flight == 0


def test_serve_gets_a_list_of_starlette_middlewares_with_the_limit_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray.serve._private.http_util import validate_http_proxy_callback_return

    monkeypatch.setenv("OCR_FRONT_MAX_REQUESTS", "7")
    [middleware] = validate_http_proxy_callback_return(middlewares())
    assert middleware.cls is FrontDoor and middleware.kwargs == {"max_requests": 7}
