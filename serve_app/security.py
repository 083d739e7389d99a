"""The door checks: API key, upload-base paths, URL allowlist, training archives.

Each check either returns something safe to use or raises the ServiceError a
client should see; nothing outside the upload base is ever opened, no address
outside the allowlist is ever connected to, nothing outside the extraction
directory is ever written.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import ipaddress
import os
import shutil
import socket
import stat
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

import httpx

from serve_app.kernel.errors import (
    BadGateway,
    CorruptDocument,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    UpstreamTimeout,
)

MAX_PATH_CHARS = 1024
MAX_REDIRECTS = 3
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_api_key(provided: str | None, expected: str | None) -> None:
    """Constant-time comparison; None expected means network-isolation mode."""
    if expected is None:
        return
    if not provided or not hmac.compare_digest(provided.encode(), expected.encode()):
        raise Unauthorized("missing or wrong X-API-Key header")


def check_token(provided: str | None, expected: str | None, header: str) -> None:
    """A second secret for privileged routes; unset on the server means the route is off."""
    if expected is None:
        raise Unavailable(f"this route is disabled: the operator has not set the token "
                          f"that {header} is checked against")
    if not provided or not hmac.compare_digest(provided.encode(), expected.encode()):
        raise Unauthorized(f"missing or wrong {header} header")


# ---- paths ------------------------------------------------------------------------------


def resolve_upload_path(base: Path, user_path: str) -> Path:
    """The real path of user_path inside base, or Forbidden/InvalidInput.

    Relative paths are taken from the base; absolute ones must lie inside it."""
    if "\x00" in user_path:
        raise InvalidInput("source.path contains a NUL byte", detail={"field": "source.path"})
    if not user_path.strip():
        raise InvalidInput("source.path is empty", detail={"field": "source.path"})
    if len(user_path) > MAX_PATH_CHARS:
        raise InvalidInput(
            f"source.path is longer than {MAX_PATH_CHARS} characters",
            detail={"field": "source.path"},
        )
    real_base = os.path.realpath(base)
    try:
        candidate = os.path.realpath(os.path.join(real_base, user_path))
    except (OSError, ValueError) as exc:  # ENAMETOOLONG from a component, surrogates
        raise InvalidInput(f"source.path cannot be used: {exc}",
                           detail={"field": "source.path"}) from None
    if os.path.commonpath([real_base, candidate]) != real_base:
        raise Forbidden("source.path points outside the upload base")
    return Path(candidate)


def read_upload_file(base: Path, user_path: str, max_bytes: int,
                     charge: Callable[[int], None] = lambda size: None) -> bytes:
    """Read a regular file under base, walking its directories without following links.

    The path is resolved and checked first; then every component is opened relative
    to its parent with O_NOFOLLOW, so a directory or file swapped for a symlink
    between the check and the open is refused, never followed. `charge` is told the
    file's size before it is read (the ingress's byte budget)."""
    path = resolve_upload_path(base, user_path)
    real_base = os.path.realpath(base)
    parts = Path(path).relative_to(real_base).parts
    if not parts:
        raise InvalidInput("source.path is not a regular file", detail={"field": "source.path"})
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(real_base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    part = parts[0]
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        part = parts[-1]
        fd = os.open(part, os.O_RDONLY | os.O_NONBLOCK | nofollow, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        if _is_link(part, dir_fd):  # O_DIRECTORY|O_NOFOLLOW on a link says ENOTDIR
            raise Forbidden("source.path changed into a symbolic link while it was opened"
                            ) from None
        raise NotFound(f"no file {user_path!r} under the upload base") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidInput("a component of source.path is too long",
                               detail={"field": "source.path"}) from None
        if exc.errno == errno.ELOOP:  # a symlink appeared after the check
            raise Forbidden("source.path changed into a symbolic link while it was opened"
                            ) from None
        raise Forbidden(f"source.path cannot be opened: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput("source.path is not a regular file", detail={"field": "source.path"})
        if info.st_size > max_bytes:
            raise PayloadTooLarge(f"file is {info.st_size} bytes; at most {max_bytes}")
        charge(info.st_size)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"file is larger than {max_bytes} bytes")
    return data


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


# ---- URLs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UrlPolicy:
    """ALLOWED_PDF_HOSTS split into host names and explicitly allowed IP networks."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def from_allowlist(cls, entries: list[str]) -> UrlPolicy:
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def names_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def _internal(address: IPAddress) -> bool:
    """Loopback, private, link-local (cloud metadata), reserved and the like."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def check_url(url: str, policy: UrlPolicy) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL whose host is allowlisted; else 403/422."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidInput("source.url is not a valid URL", detail={"field": "source.url"}
                           ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("source.url must be an http(s) URL", detail={"field": "source.url"})
    if parts.username or parts.password:
        raise InvalidInput("source.url must not carry credentials", detail={"field": "source.url"})
    host = parts.hostname.lower().rstrip(".")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if host not in policy.hosts and not (literal and policy.names_address(literal)):
        raise Forbidden(f"host {parts.hostname!r} is not in ALLOWED_PDF_HOSTS",
                        detail={"allowed": sorted(policy.hosts)})
    return parts.scheme, host, port


async def resolve_allowed(host: str, port: int, policy: UrlPolicy) -> str:
    """One address of host that may be connected to: public, or named in the allowlist."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BadGateway(f"source.url host {host!r} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    refused = [a for a in addresses if _internal(a) and not policy.names_address(a)]
    if refused:
        raise Forbidden(
            f"source.url host {host!r} resolves to the internal address {refused[0]}; "
            "list that address or network in ALLOWED_PDF_HOSTS to allow it"
        )
    return str(addresses[0])


async def fetch_url(client: httpx.AsyncClient, url: str, allowed: list[str], max_bytes: int,
                    timeout_s: float, charge: Callable[[int], None] = lambda size: None
                    ) -> bytes:
    """Download an allowlisted URL within max_bytes and timeout_s in all.

    Every hop (at most MAX_REDIRECTS redirects, each to an allowed host) is resolved
    once, checked, and connected to by that address, so DNS cannot point the
    connection somewhere else after the check. `charge` is told each chunk's size as it
    arrives (the ingress's byte budget)."""
    policy = UrlPolicy.from_allowlist(allowed)
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(MAX_REDIRECTS + 1):
                scheme, host, port = check_url(url, policy)
                address = await resolve_allowed(host, port, policy)
                location = await _fetch_once(client, url, scheme, host, port, address, max_bytes,
                                             charge)
                if isinstance(location, bytes):
                    return location
                url = location
    except TimeoutError:
        raise UpstreamTimeout(f"source.url did not arrive within {timeout_s} s") from None
    except httpx.HTTPError as exc:
        raise BadGateway(f"source.url could not be fetched: {exc}") from None
    raise Forbidden(f"source.url redirected more than {MAX_REDIRECTS} times")


async def _fetch_once(client: httpx.AsyncClient, url: str, scheme: str, host: str, port: int,
                      address: str, max_bytes: int, charge: Callable[[int], None]
                      ) -> bytes | str:
    """The body, or the absolute URL of a redirect."""
    parts = urlsplit(url)
    netloc = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((scheme, f"{netloc}:{port}", parts.path or "/", parts.query, ""))
    default_port = port == (443 if scheme == "https" else 80)
    headers = {"Host": host if default_port else f"{host}:{port}"}
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
        if response.is_redirect:
            target = response.headers.get("location", "")
            return str(httpx.URL(url).join(target))
        if response.status_code == 404:
            raise NotFound("source.url answered 404")
        if response.status_code != 200:
            raise BadGateway(f"source.url answered {response.status_code}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise PayloadTooLarge(f"source.url is {declared} bytes; at most {max_bytes}")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"source.url is larger than {max_bytes} bytes")
            charge(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)


# ---- archives ---------------------------------------------------------------------------

NESTED_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst")


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 20_000
    max_total_bytes: int = 4 * 1024**3
    max_ratio: float = 200.0


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why this entry must not be extracted, or None."""
    name = info.filename
    if not name or "\x00" in name:
        return "an entry has an empty or NUL-containing name"
    if "\\" in name or (len(name) > 1 and name[1] == ":"):
        return f"entry {name!r} is a Windows path (drive letter, UNC or backslashes)"
    path = PurePosixPath(name)
    if path.is_absolute():
        return f"entry {name!r} is an absolute path"
    if ".." in path.parts:
        return f"entry {name!r} climbs out of the archive with '..'"
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 where the archiver set no type
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return f"entry {name!r} is a symbolic link or special file"
    if info.flag_bits & 0x1:
        return f"entry {name!r} is encrypted"
    if not info.is_dir() and name.lower().endswith(NESTED_ARCHIVE_SUFFIXES):
        return f"entry {name!r} is a nested archive; send one flat ZIP"
    return None


def extract_zip(archive: Path, parent: Path, limits: ArchiveLimits) -> Path:
    """Validate and extract a ZIP into a new private directory under parent.

    Checks every entry before writing anything, then counts the bytes really written
    (headers can lie). On any failure the directory is removed and nothing remains."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            entries = zipped.infolist()
            names = [info.filename.rstrip("/") for info in entries]
            if len(set(names)) != len(names):
                raise InvalidInput("unsafe archive: an entry name appears twice")
            if len(entries) > limits.max_entries:
                raise PayloadTooLarge(f"the archive has {len(entries)} entries; at most "
                                      f"{limits.max_entries}")
            for info in entries:
                problem = _entry_problem(info)
                if problem:
                    raise InvalidInput(f"unsafe archive: {problem}")
                if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
                    raise PayloadTooLarge(
                        f"entry {info.filename!r} expands {info.file_size // info.compress_size}"
                        f"-fold: a zip bomb? at most {limits.max_ratio:.0f}-fold")
            declared = sum(info.file_size for info in entries)
            if declared > limits.max_total_bytes:
                raise PayloadTooLarge(f"the archive unpacks to {declared} bytes; at most "
                                      f"{limits.max_total_bytes}")
            target = Path(tempfile.mkdtemp(prefix="archive-", dir=parent))
            try:
                _write_entries(zipped, entries, target, limits)
            except OSError as exc:  # a file where a directory must go, and the like
                shutil.rmtree(target, ignore_errors=True)
                raise InvalidInput(f"the archive cannot be extracted: {exc.strerror}") from None
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            return target
    except zipfile.BadZipFile as exc:
        raise UnsupportedMediaType(f"not a readable ZIP archive: {exc}") from None
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
        raise CorruptDocument(f"the ZIP archive cannot be extracted: {exc}") from None


def _write_entries(zipped: zipfile.ZipFile, entries: list[zipfile.ZipInfo], target: Path,
                   limits: ArchiveLimits) -> None:
    written = 0
    for info in entries:
        destination = target / info.filename
        if info.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with zipped.open(info) as source, os.fdopen(fd, "wb") as sink:
            entry_bytes = 0
            while chunk := source.read(1 << 20):
                entry_bytes += len(chunk)
                written += len(chunk)
                if entry_bytes > info.file_size or written > limits.max_total_bytes:
                    raise PayloadTooLarge(f"entry {info.filename!r} unpacks to more than its "
                                          "header says")
                sink.write(chunk)
