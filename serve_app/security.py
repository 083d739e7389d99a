"""The door checks: API key, upload-base paths, URL allowlist.

Each check either returns something safe to use or raises the ServiceError a
client should see; nothing outside the upload base is ever opened.
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from serve_app.errors import (
    BadGateway,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UpstreamTimeout,
)

MAX_PATH_CHARS = 1024
MAX_REDIRECTS = 3


def check_api_key(provided: str | None, expected: str | None) -> None:
    """Constant-time comparison; None expected means network-isolation mode."""
    if expected is None:
        return
    if not provided or not hmac.compare_digest(provided.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key header")


def resolve_upload_path(base: Path, user_path: str) -> Path:
    """The real path of user_path inside base, or Forbidden/NotFound/InvalidInput."""
    if "\x00" in user_path:
        raise InvalidInput("source.path contains a NUL byte", detail={"field": "source.path"})
    if len(user_path) > MAX_PATH_CHARS:
        raise InvalidInput(
            f"source.path is longer than {MAX_PATH_CHARS} characters",
            detail={"field": "source.path"},
        )
    real_base = os.path.realpath(base)
    # Relative paths are taken from the base; absolute ones must lie inside it.
    candidate = os.path.realpath(os.path.join(real_base, user_path))
    if os.path.commonpath([real_base, candidate]) != real_base:
        raise Forbidden("source.path points outside the upload base")
    return Path(candidate)


def read_upload_file(base: Path, user_path: str, max_bytes: int) -> bytes:
    """Read a regular file under base without following a symlink swapped in late."""
    path = resolve_upload_path(base, user_path)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"no file {user_path!r} under the upload base") from None
    except OSError as exc:  # ELOOP: a symlink appeared after the check
        raise Forbidden(f"source.path cannot be opened safely: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput("source.path is not a regular file", detail={"field": "source.path"})
        if info.st_size > max_bytes:
            raise PayloadTooLarge(f"file is {info.st_size} bytes; at most {max_bytes}")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"file is larger than {max_bytes} bytes")
    return data


def check_url(url: str, allowed_hosts: list[str]) -> str:
    """The URL if it is http(s) to an allowlisted host; Forbidden otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("source.url must be an http(s) URL", detail={"field": "source.url"})
    if parts.username or parts.password:
        raise InvalidInput("source.url must not carry credentials", detail={"field": "source.url"})
    if parts.hostname.lower().rstrip(".") not in allowed_hosts:
        raise Forbidden(
            f"host {parts.hostname!r} is not in ALLOWED_PDF_HOSTS",
            detail={"allowed": allowed_hosts},
        )
    return url


async def fetch_url(
    client: httpx.AsyncClient, url: str, allowed_hosts: list[str], max_bytes: int, timeout_s: float
) -> bytes:
    """Download an allowlisted URL, following redirects only to allowed hosts, size-capped."""
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, allowed_hosts)
        try:
            async with client.stream("GET", url, timeout=timeout_s) as response:
                if response.is_redirect:
                    url = str(response.next_request.url) if response.next_request else ""
                    continue
                if response.status_code == 404:
                    raise NotFound("source.url answered 404")
                if response.status_code != 200:
                    raise BadGateway(f"source.url answered {response.status_code}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > max_bytes:
                    raise PayloadTooLarge(f"source.url is {declared} bytes; at most {max_bytes}")
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"source.url is larger than {max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException:
            raise UpstreamTimeout(f"source.url did not answer within {timeout_s} s") from None
        except httpx.HTTPError as exc:
            raise BadGateway(f"source.url could not be fetched: {exc}") from None
    raise Forbidden(f"source.url redirected more than {MAX_REDIRECTS} times")
