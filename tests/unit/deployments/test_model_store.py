"""Pulling models into the cache: only whole, verified, loadable models ever appear at
their path; everything else is refused and leaves nothing a replica could load.

The upstreams are local HTTP servers started here: a plain file server that can break
off mid-stream, and a Hugging Face endpoint speaking the hub's API and resolve routes
(HF_ENDPOINT), as huggingface_hub calls them."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployments.model_store import (
    LOCK_SUFFIX,
    PullFailed,
    clean_staging,
    ensure_present,
    pull,
    target,
)
from deployments.models import HubSource, ModelSpec, UrlSource, resolve_weights
from serve_app.kernel.errors import ModelMissing
from serve_app.kernel.settings import Settings
from tests.fixtures.cluster import free_port

REVISION = "0123456789abcdef0123456789abcdef01234567"


def safetensors_bytes() -> bytes:
    """A real (tiny) safetensors file: 8-byte header length, JSON header, data."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)


WEIGHTS = safetensors_bytes()
HUB_FILES = {"config.json": b'{"model_type": "xlm-roberta"}', "model.safetensors": WEIGHTS}


class Upstream:
    """A file server (/file, /broken: stops halfway through) and a hub (/api, /resolve)."""

    def __init__(self) -> None:
        owner = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def send(self, status: int, body: bytes, headers: dict[str, str],
                     send_body: bool = True) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def route(self, send_body: bool) -> None:
                owner.requests.append(self.path)
                length = {"Content-Length": str(len(WEIGHTS))}
                if self.path == "/file":
                    self.send(200, WEIGHTS, length, send_body)
                elif self.path == "/broken":
                    self.send(200, WEIGHTS[: len(WEIGHTS) // 2], length, send_body)
                    self.close_connection = True
                elif self.path.startswith(f"/api/models/org/tiny/revision/{REVISION}"):
                    body = json.dumps({"id": "org/tiny", "sha": REVISION, "siblings": [
                        {"rfilename": name} for name in HUB_FILES]}).encode()
                    self.send(200, body, {"Content-Type": "application/json",
                                          "Content-Length": str(len(body))}, send_body)
                elif self.path.startswith(f"/org/tiny/resolve/{REVISION}/"):
                    name = self.path.rsplit("/", 1)[1]
                    body = HUB_FILES[name]
                    self.send(200, body, {
                        "Content-Length": str(len(body)), "X-Repo-Commit": REVISION,
                        "ETag": f'"{hashlib.sha256(body).hexdigest()}"'}, send_body)
                else:
                    self.send(404, b"", {"Content-Length": "0"}, send_body)

            def do_GET(self) -> None:
                self.route(True)

            def do_HEAD(self) -> None:
                self.route(False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.server.shutdown()


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    return Settings(OCR_SIDECAR_API_KEY="k", MODEL_CACHE_DIR=str(tmp_path / "models"))


def url_model(url: str, sha256: str = hashlib.sha256(WEIGHTS).hexdigest()) -> ModelSpec:
    return ModelSpec(name="tiny-file", kind="segmentation", engine="kraken-blla",
                     footprint_mb=1, path="tiny/weights.safetensors",
                     source=UrlSource(url=url, sha256=sha256))


def staging_is_empty(settings: Settings) -> bool:
    """Nothing in staging but the pull's lock file (kept for the next pull)."""
    assert settings.tmp_dir is not None
    return not settings.tmp_dir.exists() or not any(
        not entry.name.endswith(LOCK_SUFFIX) for entry in settings.tmp_dir.iterdir())


def test_a_verified_url_download_is_renamed_into_place(upstream: Upstream,
                                                       settings: Settings) -> None:
    seen: list[tuple[int, int | None]] = []
    path = pull(url_model(f"{upstream.url}/file"), settings, lambda done, total:
                seen.append((done, total)))
    assert path == target(url_model(f"{upstream.url}/file"), settings)
    assert path.read_bytes() == WEIGHTS
    assert seen[-1] == (len(WEIGHTS), len(WEIGHTS))  # the progress bar's feed
    assert staging_is_empty(settings)
    assert resolve_weights(url_model(f"{upstream.url}/file"), settings) == path


@pytest.mark.parametrize(("route", "sha256", "why"), [
    ("/file", "0" * 64, "sha256"),  # the upstream sends other bytes than the catalog's
    ("/broken", hashlib.sha256(WEIGHTS).hexdigest(), "/broken"),  # broken off mid-stream
])
def test_a_wrong_or_interrupted_download_leaves_nothing_loadable(
        upstream: Upstream, settings: Settings, route: str, sha256: str, why: str) -> None:
    spec = url_model(f"{upstream.url}{route}", sha256)
    with pytest.raises(PullFailed, match=why):
        pull(spec, settings)
    assert not target(spec, settings).exists()
    assert staging_is_empty(settings)
    with pytest.raises(ModelMissing, match="ocr-graph models pull tiny-file"):
        resolve_weights(spec, settings)


def test_a_hugging_face_repo_comes_through_huggingface_hub_at_its_revision(
        upstream: Upstream, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", upstream.url)
    spec = ModelSpec(name="tiny-m3", kind="embedding", engine="bge-m3", footprint_mb=1,
                     path="tiny-m3", source=HubSource(hf="org/tiny", revision=REVISION))
    path = pull(spec, settings)
    assert sorted(f.name for f in path.iterdir()) == sorted(HUB_FILES)
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert any(f"/resolve/{REVISION}/" in request for request in upstream.requests)
    assert staging_is_empty(settings)


def test_unloadable_files_are_refused(upstream: Upstream, settings: Settings,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(HUB_FILES, "model.safetensors", b"\xff" * 64)
    monkeypatch.setenv("HF_ENDPOINT", upstream.url)
    spec = ModelSpec(name="tiny-m3", kind="embedding", engine="bge-m3", footprint_mb=1,
                     path="broken-m3", source=HubSource(hf="org/tiny", revision=REVISION))
    with pytest.raises(PullFailed, match="does not load"):
        pull(spec, settings)
    assert not target(spec, settings).exists() and staging_is_empty(settings)


def test_staging_leftovers_older_than_a_day_are_removed(settings: Settings) -> None:
    assert settings.tmp_dir is not None
    old, fresh = settings.tmp_dir / "bge-m3-abc", settings.tmp_dir / "reranker-def"
    old.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(b"half")
    fresh.mkdir()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert clean_staging(settings) == [old]
    assert not old.exists() and fresh.exists()


def test_a_model_without_a_source_says_to_copy_it(settings: Settings) -> None:
    spec = ModelSpec(name="hand-made", kind="ocr", engine="kraken", footprint_mb=1,
                     path="kraken/rec.mlmodel")
    with pytest.raises(ModelMissing, match="copy its files"):
        resolve_weights(spec, settings)
    with pytest.raises(PullFailed, match="no source"):
        pull(spec, settings)


def test_a_replica_start_pulls_a_missing_model_where_the_catalog_allows_it(
        upstream: Upstream, settings: Settings) -> None:
    allowed = url_model(f"{upstream.url}/file").model_copy(update={"pull_on_start": True})
    ensure_present(allowed, settings)
    assert target(allowed, settings).read_bytes() == WEIGHTS
    assert staging_is_empty(settings)
    fetched = len(upstream.requests)
    ensure_present(allowed, settings)  # present now: nothing fetched again
    assert len(upstream.requests) == fetched


def test_without_pull_on_start_a_replica_start_fetches_nothing_and_says_how(
        upstream: Upstream, settings: Settings) -> None:
    spec = url_model(f"{upstream.url}/file")
    before = len(upstream.requests)
    ensure_present(spec, settings)
    assert len(upstream.requests) == before and not target(spec, settings).exists()
    with pytest.raises(ModelMissing, match="ocr-graph models pull tiny-file"):
        resolve_weights(spec, settings)


def test_offline_a_replica_start_names_the_model_and_the_pull_command(
        settings: Settings) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/file"  # nothing listens there: offline
    offline = url_model(nowhere).model_copy(update={"pull_on_start": True})
    with pytest.raises(ModelMissing) as refused:
        ensure_present(offline, settings)
    assert "'tiny-file'" in refused.value.message
    assert "`ocr-graph models pull tiny-file`" in refused.value.message
    assert refused.value.detail == {"model": "tiny-file",
                                    "path": str(target(offline, settings))}
    assert not target(offline, settings).exists() and staging_is_empty(settings)


def test_replicas_starting_together_download_the_model_once(upstream: Upstream,
                                                             settings: Settings) -> None:
    spec = url_model(f"{upstream.url}/file").model_copy(update={"pull_on_start": True})
    before = upstream.requests.count("/file")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: ensure_present(spec, settings), range(4)))
    assert upstream.requests.count("/file") - before == 1
    assert target(spec, settings).read_bytes() == WEIGHTS


def test_pull_on_start_without_a_source_is_refused_when_the_catalog_loads() -> None:
    with pytest.raises(ValueError, match="pull_on_start needs a source"):
        ModelSpec(name="x", kind="ocr", engine="kraken", footprint_mb=1, path="x.mlmodel",
                  pull_on_start=True)



def test_a_model_replica_starts_its_engine_on_the_pulled_files(
        upstream: Upstream, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """ModelReplica.start pulls before it builds the engine (outside Ray: no GPU share)."""
    from types import SimpleNamespace

    from deployments import replica

    context = SimpleNamespace(get_assigned_resources=dict,
                              get_accelerator_ids=lambda: {"GPU": []})
    monkeypatch.setattr(replica.ray, "get_runtime_context", lambda: context)
    monkeypatch.setattr(replica.os, "nice", lambda _: 0)
    spec = url_model(f"{upstream.url}/file").model_copy(update={"pull_on_start": True})
    seen: list[bytes] = []

    def engine(device: str) -> object:
        seen.append(resolve_weights(spec, settings).read_bytes())  # type: ignore[union-attr]
        return object()

    replica.ModelReplica().start(spec, settings, None, engine)
    assert seen == [WEIGHTS]
