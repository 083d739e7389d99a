"""Trained models in STATE_DIR/models: versions written whole, one active, three backups.

    STATE_DIR/models/NAME/v3.safetensors   a version (kraken weights)
    STATE_DIR/models/NAME/v3.json          what trained it: job, kind, accuracy, time
    STATE_DIR/models/NAME/ACTIVE           the active version's number

A version is copied next to its final name and renamed into place, so a reader sees a
whole file or none; a copy cut short leaves a `.partial` file that the next start removes.
The active version and the three newest others are kept; older ones are removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve_app.kernel.errors import InvalidInput, NotFound

logger = logging.getLogger("ray.serve")

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_FILE = re.compile(r"^v(?P<version>[1-9][0-9]{0,8})\.(?P<suffix>safetensors|mlmodel)$")
BACKUPS = 3
PARTIAL = ".partial"


@dataclass(frozen=True)
class Version:
    name: str
    version: int
    path: Path
    active: bool
    kind: str | None
    accuracy: float | None
    job_id: str | None
    created_at: float

    def describe(self) -> dict[str, Any]:
        """The version as GET /v1/models/{name}/versions lists it."""
        body = asdict(self)
        body.pop("path")
        body["created_at"] = datetime.fromtimestamp(self.created_at, UTC).isoformat()
        return body


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidInput(f"model name {name!r} must be 1-64 lower-case letters, digits, "
                           "'.', '_' or '-', starting with a letter or digit",
                           {"field": "name"})
    return name


class TrainedModels:
    """The trained-model directory of STATE_DIR."""

    def __init__(self, root: Path):
        self.root = root

    def versions(self, name: str) -> list[Version]:
        """Every version of `name`, oldest first."""
        folder = self.root / check_name(name)
        active = self.active_number(name)
        found = []
        for path in sorted(folder.glob("v*")) if folder.is_dir() else []:
            match = VERSION_FILE.match(path.name)
            if not match:
                continue
            number = int(match["version"])
            meta = _read_json(path.with_suffix(".json"))
            found.append(Version(name, number, path, number == active, meta.get("kind"),
                                 meta.get("accuracy"), meta.get("job_id"),
                                 float(meta.get("created_at", path.stat().st_mtime))))
        return sorted(found, key=lambda v: v.version)

    def version(self, name: str, number: int | None) -> Version | None:
        """One version of `name`, if it is there."""
        return next((v for v in self.versions(name) if v.version == number), None)

    def active_number(self, name: str) -> int | None:
        try:
            text = (self.root / check_name(name) / "ACTIVE").read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return int(text.strip()) if text.strip().isdigit() else None

    def active(self, name: str) -> Version | None:
        """The active version, if one is active and its file is there."""
        return next((v for v in self.versions(name) if v.active), None)

    def publish(self, name: str, source: Path, metadata: dict[str, Any]) -> Version:
        """Copy a trained model in as the next version (not active yet)."""
        folder = self.root / check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        existing = self.versions(name)
        number = (existing[-1].version + 1) if existing else 1
        target = folder / f"v{number}{source.suffix}"
        meta = {**metadata, "created_at": time.time()}
        with source.open("rb") as src:
            _write_whole(target, lambda handle: shutil.copyfileobj(src, handle, 1 << 20))
        _write_whole(target.with_suffix(".json"),
                     lambda handle: handle.write(json.dumps(meta).encode()))
        logger.info("trained model %s: version %d written (%s)", name, number, target)
        self.prune(name)
        written = self.version(name, number)
        assert written is not None
        return written

    def activate(self, name: str, version: int) -> Version:
        """Make `version` the active one; the one it replaces stays as a backup."""
        if self.version(name, version) is None:
            known = [v.version for v in self.versions(name)]
            raise NotFound(f"model {name!r} has no version {version}; versions: {known}",
                           {"name": name, "versions": known})
        _write_whole(self.root / name / "ACTIVE",
                     lambda handle: handle.write(f"{version}\n".encode()))
        logger.info("trained model %s: version %d is active", name, version)
        self.prune(name)
        activated = self.version(name, version)
        assert activated is not None
        return activated

    def prune(self, name: str) -> None:
        """Keep the active version and the BACKUPS newest others."""
        others = [v for v in self.versions(name) if not v.active]
        for old in others[: max(0, len(others) - BACKUPS)]:
            old.path.unlink(missing_ok=True)
            old.path.with_suffix(".json").unlink(missing_ok=True)
            logger.info("trained model %s: version %d removed (keeping %d backups)", name,
                        old.version, BACKUPS)

    def remove_partials(self) -> list[Path]:
        """Files a copy left behind when it was cut short (run at start)."""
        removed = [path for path in self.root.rglob(f"*{PARTIAL}") if path.is_file()]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed


def _write_whole(target: Path, write: Any) -> None:
    """Write through a `.partial` file in the target's directory, fsync, rename."""
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PARTIAL, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, ValueError):
        return {}
