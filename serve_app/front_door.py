"""The front door: admission and the one error body, in front of the Ingress's routes.

Serve's proxy puts every request it cannot hand to the Ingress at once into an unbounded
queue; under a burst of hundreds, a refusal the Ingress could give in milliseconds waits
tens of seconds for its turn (bench/overload.py). Serve's own bound (`max_queued_requests`
on the Ingress) counts a request as queued while it is being routed, so it refuses parts of
a burst even when the Ingress is idle. This ASGI middleware keeps an exact count instead:
at most `OCR_FRONT_MAX_REQUESTS` requests are in flight; the next one gets 503 with
Retry-After at once. Health probes are never refused.

In the Ingress's app it also asks a route's gate, where the Ingress gives one: a route
whose budget is as good as full (serve_app/budget.py: less room left than the average
request in flight and than a sixteenth of the limit) is refused here, before its body is
read. Reading and parsing a body only to refuse it costs the Ingress about 4 ms on 2
cores; under a burst of 800 embedding requests, 112 such requests were what every refusal
queued behind them waited for (bench/overload.py: refusal p99 0.9-1.1 s, 0.4 s without
them; ADR 010).

It runs in two places (ADR 008). HAProxy (`RAY_SERVE_ENABLE_HA_PROXY`) hands requests
straight to the Ingress replicas' own HTTP servers, so the middleware wraps the Ingress's
app (serve_app/asgi.py), which takes every request HAProxy passes (`INGRESS_MAX_ONGOING`)
and lets this count decide. Serve's Python proxy stays as HAProxy's fallback and is the
whole path where HAProxy is off; there the middleware also runs in the proxy, through
Serve's hook `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` (=`CALLBACK`), and rewrites the
proxy's own plain-text answers (a request timeout, 408; an unavailable application, 503)
into the error body with the request id. The ingress's answers are JSON and pass
untouched, as do Serve's `/-/` endpoints.

Both switches are read from a node's environment when Ray starts (`NODE_ENV`):
`ocr-graph serve`, the container's entrypoint, KubeRay and the test clusters set them;
`ray start` on a machine of your own needs them exported first (docs/operations.md). It
imports nothing but the kernel's errors and Ray's metrics: it runs in every proxy
process.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson
from starlette.middleware import Middleware

from serve_app.kernel.errors import Overloaded, ServiceError, error_body

CALLBACK = "serve_app.front_door:middlewares"
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
HA_PROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
# What every Ray node's environment needs when Ray starts: HAProxy in front of the Ingress
# replicas, and the front door in Serve's Python proxy, HAProxy's fallback.
NODE_ENV = {HA_PROXY_ENV: "1", CALLBACK_ENV: CALLBACK}
# Requests let in by default, sized by bench/overload.py behind Serve's Python proxy: every
# request let in beyond what the deployments behind can take cost the front ~10 ms to refuse
# on 2 cores (refusal p99 0.62 s at 192, 0.85 s at 256); at 128 a client holding exactly 128
# open met refusals, as a request counts until its answer has left. Behind HAProxy the same
# 192 gave refusals p99 0.77 s from when each was sent (ADR 008).
FRONT_MAX_REQUESTS = 192
FRONT_MAX_REQUESTS_ENV = "OCR_FRONT_MAX_REQUESTS"
# An Ingress replica takes every request HAProxy hands it (HAProxy's default maxconn) and
# lets the front door refuse beyond OCR_FRONT_MAX_REQUESTS: requests Serve held back in the
# replica's own queue would wait there unseen, without bound.
INGRESS_MAX_ONGOING = 4096
RETRY_AFTER_S = 2
HEALTH_PATHS = ("/healthz", "/readyz")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Message, Receive, Send], Awaitable[None]]
# A route's gate: the error a request on it would get now, or None to let it in.
Gate = Callable[[], ServiceError | None]
# The gates the Ingress replica in this process opened (`register_gates`). Serve builds the
# door in front of the replica's HTTP server from CALLBACK, so it cannot be handed them; it
# reads them here, and refuses on the server's own event loop, before Serve's request path.
PROCESS_GATES: dict[str, Gate] = {}

# The proxy's own answers, by status: the code a client of ours branches on.
CODES = {404: "not_found", 408: "upstream_timeout", 429: "overloaded", 503: "overloaded"}
HINTS = {408: "the request took longer than the proxy's request timeout",
         429: "the service is at capacity: retry after the Retry-After seconds",
         503: "the service cannot take the request now: retry after the Retry-After seconds"}


def middlewares() -> list[Middleware]:
    """Serve's proxy callback: the middlewares it wraps around its ASGI app."""
    return [Middleware(FrontDoor, max_requests=front_max_requests())]


def front_max_requests() -> int:
    """OCR_FRONT_MAX_REQUESTS from the node's environment, else FRONT_MAX_REQUESTS."""
    return int(os.environ.get(FRONT_MAX_REQUESTS_ENV, FRONT_MAX_REQUESTS))


class FrontDoor:
    """At most max_requests requests in flight, and no request past its route's gate
    (paths relative to the app's root; without `gates`, those of PROCESS_GATES); the
    proxy's plain-text errors as JSON."""

    def __init__(self, app: Asgi, max_requests: int = FRONT_MAX_REQUESTS,
                 gates: Mapping[str, Gate] | None = None):
        if max_requests < 1:
            raise ValueError(f"{FRONT_MAX_REQUESTS_ENV} must be at least 1, not {max_requests}")
        self.app = app
        self.max_requests = max_requests
        self.gates = PROCESS_GATES if gates is None else gates
        self.in_flight = 0
        self.refused = _refusal_counter()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/-/") or path.endswith(HEALTH_PATHS):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope, path)
        if refusal is not None:
            self.refused.inc()
            await _refuse(scope, send, refusal)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, _shaping(send))
        finally:
            self.in_flight -= 1

    def _refusal(self, scope: Message, path: str) -> ServiceError | None:
        if self.in_flight >= self.max_requests:
            return Overloaded(f"the service is at capacity ({self.max_requests} requests in "
                              f"flight): retry after {RETRY_AFTER_S} s",
                              {"in_flight": self.max_requests},
                              {"Retry-After": str(RETRY_AFTER_S)})
        gate = self.gates.get(app_path(scope))
        return gate() if gate else None


def app_path(scope: Message) -> str:
    """The request's path below the application's route prefix (Serve's root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def register_gates(gates: Mapping[str, Gate]) -> None:
    """Give the doors of this process that were built without gates of their own these."""
    PROCESS_GATES.update(gates)


def _refusal_counter() -> Any:
    """Ray's counter of refusals (exported by its Ray worker; a no-op outside Ray)."""
    from ray.util.metrics import Counter

    return Counter("ocr_graph_front_refusals", "Requests the front door refused before "
                   "reading them: OCR_FRONT_MAX_REQUESTS in flight, or their route's budget "
                   "full.")


async def _refuse(scope: Message, send: Send, error: ServiceError) -> None:
    given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
    request_id = given or uuid.uuid4().hex
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in error.headers.items()]
    await _send_error(send, error.status, error_body(error.code, error.message, error.detail,
                                                     request_id),
                      [*headers, (b"x-request-id", request_id.encode("latin-1"))])


def _shaping(send: Send) -> Send:
    """`send`, with the proxy's plain-text error answers rewritten into the error body."""
    held: Message | None = None
    text: list[bytes] = []

    async def shaped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and _plain_error(message):
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        text.append(message.get("body", b""))
        if not message.get("more_body", False):
            await _send_shaped(held, b"".join(text), send)

    return shaped


def _plain_error(start: Message) -> bool:
    headers = dict(start.get("headers", []))
    return start["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"text/")


async def _send_shaped(start: Message, text: bytes, send: Send) -> None:
    status = start["status"]
    headers = [(name, value) for name, value in start.get("headers", [])
               if name.lower() not in (b"content-type", b"content-length")]
    request_id = dict(headers).get(b"x-request-id", b"").decode("latin-1") or None
    said = text.decode("utf-8", "replace").strip()
    hint = HINTS.get(status)
    message = f"{hint} ({said})" if hint and said else hint or said or "error"
    await _send_error(send, status, error_body(CODES.get(status, "internal_error"), message,
                                               None, request_id), headers)


async def _send_error(send: Send, status: int, body: dict[str, Any],
                      headers: list[tuple[bytes, bytes]]) -> None:
    """One error body as a whole JSON answer, beside the given headers."""
    data = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data, "more_body": False})
