"""Fetch a catalog model that is missing from MODEL_CACHE_DIR, safely.

A catalog entry's `source` says where its files come from: a Hugging Face repo pinned
to a revision (huggingface_hub downloads it, resuming and verifying on its own), or a
URL with the sha256 of its one file (streamed with httpx, hashed as it arrives).
Either way the files land in a staging dir under TMPDIR (MODEL_CACHE_DIR/.tmp, on the
cache's filesystem), are checked for loadability, and are renamed into place in one
step: an interrupted or corrupt download leaves nothing a replica could load. Staging
leftovers older than a day are removed (`clean_staging`, also the container's
entrypoint). One pull of a model runs at a time per cache (a lock file in staging), so
replicas starting together on a node download it once.

`ensure_present` is the replica's start: where the catalog allows it (`pull_on_start`),
a missing model is pulled before the engine loads; where that fails (offline), the start
fails with the model's name and the command that fetches it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from deployments.models import HubSource, ModelSpec, UrlSource
from serve_app.kernel.errors import ModelMissing
from serve_app.kernel.settings import Settings

logger = logging.getLogger("ray.serve")

# (bytes so far, total bytes or None): a progress bar's feed.
Progress = Callable[[int, int | None], None]
STAGING_MAX_AGE_S = 86400.0
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".mlmodel")
LOCK_SUFFIX = ".pull-lock"


class PullFailed(RuntimeError):
    """A download that was refused, broken off or not loadable; nothing was installed."""


def target(spec: ModelSpec, settings: Settings) -> Path:
    """Where the model lives in the cache: its `path`, relative to MODEL_CACHE_DIR."""
    if spec.path is None:
        raise PullFailed(f"model {spec.name!r} has no path in the cache to pull it to")
    path = Path(spec.path)
    assert settings.model_cache_dir is not None
    return path if path.is_absolute() else settings.model_cache_dir / path


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pull(spec: ModelSpec, settings: Settings, progress: Progress | None = None) -> Path:
    """The model in place: fetched into staging, checked, renamed; already there: as is."""
    if spec.source is None:
        raise PullFailed(f"model {spec.name!r} has no source in config/models.yaml to pull "
                         "it from: copy its files to the cache by hand")
    final = target(spec, settings)
    if final.exists():
        return final
    assert settings.tmp_dir is not None
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    with _one_pull_at_a_time(settings.tmp_dir / f"{spec.name}{LOCK_SUFFIX}"):
        if final.exists():  # another process pulled it while this one waited
            return final
        with tempfile.TemporaryDirectory(prefix=f"{spec.name}-", dir=settings.tmp_dir,
                                         ignore_cleanup_errors=True) as folder:
            staging = Path(folder)
            if isinstance(spec.source, HubSource):
                fetched = _from_hub(spec.source, staging / "model")
            else:
                fetched = _from_url(spec.source, staging / final.name, progress)
            check_loadable(fetched)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fetched, final)  # one rename, on the cache's filesystem
    return final


def ensure_present(spec: ModelSpec, settings: Settings) -> None:
    """A replica's start: pull a missing model where the catalog allows it
    (`pull_on_start`); a pull that fails says which model and how to fetch it."""
    if not spec.pull_on_start or target(spec, settings).exists():
        return
    logger.info("model %s is not in the cache: pulling it from %s", spec.name, spec.source)
    try:
        path = pull(spec, settings)
    except PullFailed as exc:
        raise ModelMissing(
            f"model {spec.name!r} is not at {target(spec, settings)} and could not be "
            f"pulled ({exc}): run `ocr-graph models pull {spec.name}` on a host that "
            "reaches the source, or copy its files there",
            detail={"model": spec.name, "path": str(target(spec, settings))}) from None
    logger.info("model %s pulled to %s (%d bytes)", spec.name, path, size_of(path))


@contextlib.contextmanager
def _one_pull_at_a_time(lock: Path) -> Iterator[None]:
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def _from_hub(source: HubSource, into: Path) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        snapshot_download(source.hf, revision=source.revision, local_dir=into,
                          allow_patterns=source.files or None, max_workers=2,
                          endpoint=os.environ.get("HF_ENDPOINT") or None)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise PullFailed(f"{source.hf}@{source.revision}: {exc}") from None
    shutil.rmtree(into / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
    return into


def _from_url(source: UrlSource, into: Path, progress: Progress | None) -> Path:
    digest, done = hashlib.sha256(), 0
    try:
        with httpx.stream("GET", source.url, follow_redirects=True, timeout=60) as response:
            response.raise_for_status()
            declared = response.headers.get("content-length")
            total = int(declared) if declared and declared.isdigit() else None
            with open(into, "wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    except httpx.HTTPError as exc:
        raise PullFailed(f"{source.url}: {type(exc).__name__}: {exc}") from None
    if digest.hexdigest() != source.sha256:
        raise PullFailed(f"{source.url}: sha256 {digest.hexdigest()}, the catalog says "
                         f"{source.sha256}: refused")
    return into


def check_loadable(path: Path) -> None:
    """Enough of the model reads back to be worth installing: a safetensors header that
    parses, a config.json that is JSON, at least one file of weights."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    if not any(f.suffix in WEIGHT_SUFFIXES for f in files):
        raise PullFailed(f"{path.name}: no weights among the fetched files")
    for found in files:
        try:
            if found.suffix == ".safetensors":
                with open(found, "rb") as handle:
                    (length,) = struct.unpack("<Q", handle.read(8))
                    if length > found.stat().st_size - 8:
                        raise ValueError(f"a header of {length} bytes in a file of "
                                         f"{found.stat().st_size}")
                    json.loads(handle.read(length))
            elif found.name == "config.json":
                json.loads(found.read_text(encoding="utf-8"))
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise PullFailed(f"{found.name} does not load: {exc}") from None


def clean_staging(settings: Settings, max_age_s: float = STAGING_MAX_AGE_S) -> list[Path]:
    """Remove staging leftovers older than max_age_s (a pull broken off long ago)."""
    assert settings.tmp_dir is not None
    if not settings.tmp_dir.is_dir():
        return []
    removed = []
    for entry in settings.tmp_dir.iterdir():
        if entry.name.endswith(LOCK_SUFFIX):  # a lock a pull may hold: never removed
            continue
        if time.time() - entry.lstat().st_mtime > max_age_s:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
