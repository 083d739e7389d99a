"""The front door, in the Ingress's app and in Serve's proxy: an exact count of requests in
flight, refusals at once in the one error body, health probes always let through, and the
proxy's own plain-text answers rewritten; everything else passes through untouched."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from serve_app.asgi import build_http_app, route
from serve_app.front_door import FrontDoor, middlewares
from serve_app.kernel.settings import Settings

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


class Held:
    """Routes of an Ingress-like object: /v1/slow waits until `gate` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = 0

    @route("GET", "/v1/slow")
    async def slow(self) -> dict[str, str]:
        self.entered += 1
        await self.gate.wait()
        return {"status": "done"}

    @route("GET", "/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}


def test_the_ingress_app_refuses_beyond_its_requests_in_flight_and_health_still_answers(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """HAProxy hands requests straight to the Ingress's app, so the app itself admits."""
    clean_env.setenv("OCR_FRONT_MAX_REQUESTS", "2")
    routes = Held()
    app = build_http_app(routes, Settings(OCR_SIDECAR_API_KEY="k" * 32))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress",
                                     headers={"X-API-Key": "k" * 32}) as client:
            held = [asyncio.create_task(client.get("/v1/slow")) for _ in range(2)]
            while routes.entered < 2:
                await asyncio.sleep(0)
            # a third request let in would wait for the gate: bounded, so the test fails
            refused = await asyncio.wait_for(
                client.get("/v1/slow", headers={"X-Request-ID": "r-3"}), 30)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
            error = refused.json()["error"]
            assert error["code"] == "overloaded" and error["request_id"] == "r-3"
            assert error["detail"] == {"in_flight": 2}
            assert (await client.get("/healthz")).status_code == 200
            routes.gate.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            assert (await client.get("/v1/slow")).status_code == 200  # slots given back

    asyncio.run(scenario())


def test_a_request_on_a_closed_route_is_refused_with_its_gates_error_before_its_body_is_read(
) -> None:
    from serve_app.budget import texts_to_embed

    budget = texts_to_embed(100)
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await answering(200, b"application/json", [b"{}"])(scope, receive, send)

    door = FrontDoor(app, gates={"/v1/embed": budget.refusal})
    read = 0

    async def scenario(path: str, root: str = "") -> list[dict[str, Any]]:
        nonlocal read
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal read
            read += 1
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await door({"type": "http", "path": root + path, "root_path": root,
                    "headers": [(b"x-request-id", b"r-9")]}, receive, send)
        return sent

    with budget.hold() as charge:
        charge(95)  # nearly full: 5 left, less than a sixteenth and than the one held
        for root in ("", "/ocr"):
            refused = asyncio.run(scenario("/v1/embed", root))
            headers = dict(refused[0]["headers"])
            assert refused[0]["status"] == 503 and headers[b"retry-after"] == b"2"
            error = orjson.loads(refused[-1]["body"])["error"]
            assert error["code"] == "overloaded" and error["request_id"] == "r-9"
            assert error["detail"] == {"held_texts": 95, "limit_texts": 100}
        assert reached == [] and read == 0  # neither the route nor its body was touched
        assert asyncio.run(scenario("/v1/rerank"))[0]["status"] == 200  # other routes open
    assert asyncio.run(scenario("/v1/embed"))[0]["status"] == 200  # given back: open again
    assert reached == ["/v1/rerank", "/v1/embed"]


def test_the_door_serve_builds_from_the_callback_uses_the_gates_the_ingress_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serve_app import front_door
    from serve_app.kernel.errors import Overloaded

    monkeypatch.setattr(front_door, "PROCESS_GATES", {})
    [middleware] = middlewares()
    door = middleware.cls(answering(200, b"application/json", [b"{}"]), **middleware.kwargs)
    assert asyncio.run(call(door))[0]["status"] == 200
    front_door.register_gates({"/v1/embed": lambda: Overloaded("full", None,
                                                               {"Retry-After": "2"})})
    assert asyncio.run(call(door))[0]["status"] == 503  # registered after it was built
    assert asyncio.run(call(door, "/v1/rerank"))[0]["status"] == 200
