"""The FastAPI application of one Ingress replica: OpenAPI, the front door, the request
guard, the API key, error handlers and the routes the Ingress declares with `@route`.

Serve builds it per replica (`__serve_build_asgi_app__`) from that replica's settings,
so the body limit and the key are passed in, never looked up in global state.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse

from serve_app import __version__, error_handlers
from serve_app.front_door import FrontDoor, app_path, front_max_requests
from serve_app.kernel.errors import PayloadTooLarge, error_body
from serve_app.kernel.settings import Settings
from serve_app.security import check_api_key

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MULTIPART_ALLOWANCE = 65536  # room for multipart framing around the largest upload
DESCRIPTION = (
    "OCR with geometry, kraken baselines, embeddings and rerank for a DMS/archive backend. "
    "Every /v1 route needs the X-API-Key header. Errors share one body: "
    '`{"error": {"code", "message", "detail"}}`.')
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service key.")
bearer_header = HTTPBearer(auto_error=False, description="The service key, OpenAI style.")

Asgi = Callable[[dict[str, Any], Callable[[], Awaitable[Any]],
                 Callable[[Any], Awaitable[None]]], Awaitable[None]]


class RequestGuard:
    """ASGI middleware: the request id, and bodies over max_body_bytes refused.

    Serve's proxy honours a client's X-Request-ID (or makes one), logs it with every
    line of the request and returns it; here it is kept for error bodies. A declared
    Content-Length over the limit is refused before a byte is read; a chunked body is
    counted as it streams in, so no route ever parses more than the limit."""

    def __init__(self, app: Asgi, max_body_bytes: int,
                 per_path: dict[str, int] | None = None):
        self.app = app
        self.default_limit = max_body_bytes
        self.per_path = per_path or {}  # exact paths with a limit of their own (training)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.per_path.get(app_path(scope), self.default_limit)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            body = error_body("too_large", f"request body is {int(declared)} bytes; at most "
                              f"{limit}", None, request_id)
            return await JSONResponse(body, status_code=413)(scope, receive, send)
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"request body is larger than {limit} bytes")
            return message

        await self.app(scope, counted, send)


def route(method: str, path: str, **options: Any) -> Callable[[Any], Any]:
    """Declare an Ingress method a route (FastAPI add_api_route options); /v1 and /v2
    routes need the API key."""

    def mark(func: Any) -> Any:
        func.__route__ = (method, path, options)
        return func

    return mark


def api_key_dependency(expected: str | None) -> Callable[..., Awaitable[None]]:
    """401 before any body is looked at. The key comes in X-API-Key, or as
    `Authorization: Bearer` so OpenAI clients work unchanged."""

    async def require_api_key(
            key: str | None = Depends(api_key_header),
            bearer: HTTPAuthorizationCredentials | None = Depends(bearer_header)) -> None:
        check_api_key(key or (bearer.credentials if bearer else None), expected)

    return require_api_key


def expected_api_key(settings: Settings) -> str | None:
    """The key every /v1 route needs; None in network-isolation mode."""
    if settings.auth_mode == "api-key" and settings.api_key:
        return settings.api_key.get_secret_value()
    return None


def build_http_app(routes: object, settings: Settings) -> FastAPI:
    """The app serving every `@route` method of `routes` (an Ingress replica)."""
    app = FastAPI(title="ocr-graph", version=__version__, description=DESCRIPTION,
                  responses=error_handlers.error_responses())
    training = settings.training_max_upload_bytes + MULTIPART_ALLOWANCE
    app.add_middleware(RequestGuard,  # type: ignore[arg-type]
                       max_body_bytes=settings.max_upload_bytes + MULTIPART_ALLOWANCE,
                       per_path={"/v1/train": training, "/v1/segtrain": training})
    # Outermost: HAProxy hands requests straight to this app, so admission happens here,
    # with the gates of the routes whose budgets the Ingress keeps (`door_gates`).
    gates = getattr(routes, "door_gates", dict)()
    app.add_middleware(FrontDoor, max_requests=front_max_requests(),  # type: ignore[arg-type]
                       gates=gates)
    error_handlers.install(app)
    auth = [Depends(api_key_dependency(expected_api_key(settings)))]
    seen: set[str] = set()
    for cls in reversed(type(routes).__mro__):
        for name, member in vars(cls).items():
            declared = getattr(member, "__route__", None)
            if declared is None or name in seen:
                continue
            seen.add(name)
            method, path, options = declared
            app.add_api_route(path, getattr(routes, name), methods=[method],
                              dependencies=auth if path.startswith(("/v1/", "/v2/")) else None,
                              **options)
    return app
