"""source.url: allowlist, internal addresses, redirects, size and time limits.

A real HTTP server on 127.0.0.1 plays the DMS; loopback is reachable only because the
allowlist names 127.0.0.1 explicitly, which is itself one of the rules under test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from serve_app.kernel.errors import (
    BadGateway,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    UpstreamTimeout,
)
from serve_app.security import UrlPolicy, check_url, fetch_url

PDF = b"%PDF-1.7 served"
RELEASE = threading.Event()


class Dms(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
              ) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Length": str(len(body))}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        routes = {
            "/doc.pdf": lambda: self._send(200, PDF),
            "/redirect-ok": lambda: self._send(302, headers={"Location": "/doc.pdf"}),
            "/redirect-evil": lambda: self._send(
                302, headers={"Location": "http://evil.example.org/x.pdf"}),
            "/redirect-metadata": lambda: self._send(
                302, headers={"Location": "http://169.254.169.254/latest/meta-data"}),
            "/redirect-loop": lambda: self._send(302, headers={"Location": "/redirect-loop"}),
            "/missing": lambda: self._send(404, b"no"),
            "/error": lambda: self._send(500, b"boom"),
            "/declared-big": lambda: self._send(200, b"x", {"Content-Length": "99999999"}),
            "/streamed-big": lambda: self._send(200, b"x" * 300_000, {}),
            "/hang": self._hang,
        }
        routes.get(self.path, lambda: self._send(404))()

    def _hang(self) -> None:
        RELEASE.wait(30)
        self._send(200, PDF)


@pytest.fixture(scope="module")
def dms() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dms)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    RELEASE.set()
    server.shutdown()
    server.server_close()


def fetch(url: str, allowed: list[str], max_bytes: int = 100_000, timeout_s: float = 10.0
          ) -> bytes:
    async def run() -> bytes:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await fetch_url(client, url, allowed, max_bytes, timeout_s)

    return asyncio.run(run())


LOOPBACK = ["127.0.0.1"]


def test_allowlisted_document_is_fetched(dms: str) -> None:
    assert fetch(f"{dms}/doc.pdf", LOOPBACK) == PDF


def test_redirect_to_an_allowed_host_is_followed(dms: str) -> None:
    assert fetch(f"{dms}/redirect-ok", LOOPBACK) == PDF


@pytest.mark.parametrize(
    ("path", "allowed", "error", "kw"),
    [
        ("/redirect-evil", LOOPBACK, Forbidden, {}),
        ("/redirect-metadata", LOOPBACK, Forbidden, {}),
        ("/redirect-loop", LOOPBACK, Forbidden, {}),
        ("/missing", LOOPBACK, NotFound, {}),
        ("/error", LOOPBACK, BadGateway, {}),
        ("/declared-big", LOOPBACK, PayloadTooLarge, {}),
        ("/streamed-big", LOOPBACK, PayloadTooLarge, {}),
        ("/hang", LOOPBACK, UpstreamTimeout, {"timeout_s": 0.5}),
        ("/doc.pdf", ["127.0.0.2"], Forbidden, {}),
        ("/doc.pdf", [], Forbidden, {}),
    ],
)
def test_served_urls_that_must_not_arrive(dms: str, path: str, allowed: list[str],
                                          error: type[ServiceError], kw: dict[str, float]
                                          ) -> None:
    with pytest.raises(error):
        fetch(dms + path, allowed, **kw)


def test_a_listed_name_that_resolves_to_loopback_is_refused(dms: str) -> None:
    """DNS may point an allowed name anywhere: the address is checked, not the name."""
    with pytest.raises(Forbidden, match="internal address"):
        fetch(dms.replace("127.0.0.1", "localhost") + "/doc.pdf", ["localhost"])


def test_private_networks_can_be_allowed_explicitly(dms: str) -> None:
    assert fetch(f"{dms}/doc.pdf", ["127.0.0.0/8"]) == PDF


POLICY = UrlPolicy.from_allowlist(["dms.example.org", "10.1.2.0/24"])


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://dms.example.org/a.pdf", InvalidInput),
        ("file:///etc/passwd", InvalidInput),
        ("javascript:alert(1)", InvalidInput),
        ("gopher://dms.example.org/", InvalidInput),
        ("http://", InvalidInput),
        ("https://user:pw@dms.example.org/a.pdf", InvalidInput),
        ("http://dms.example.org:99999/a.pdf", InvalidInput),
        ("https://evil.example.com/a.pdf", Forbidden),
        ("https://dms.example.org.evil.com/a.pdf", Forbidden),
        ("https://evil.com#@dms.example.org/a.pdf", Forbidden),
        ("http://127.0.0.1/a.pdf", Forbidden),
        ("http://[::1]/a.pdf", Forbidden),
        ("http://169.254.169.254/latest/meta-data", Forbidden),
        ("http://0x7f000001/a.pdf", Forbidden),
        ("http://2130706433/a.pdf", Forbidden),
        ("http://10.1.3.4/a.pdf", Forbidden),
    ],
)
def test_urls_are_refused_before_any_connection(url: str, error: type[ServiceError]) -> None:
    with pytest.raises(error):
        check_url(url, POLICY)


@pytest.mark.parametrize("url", ["https://DMS.example.org/a.pdf", "http://dms.example.org./a",
                                 "http://10.1.2.9:8080/a.pdf"])
def test_allowed_urls_pass_the_check(url: str) -> None:
    assert check_url(url, POLICY)[0] in ("http", "https")
