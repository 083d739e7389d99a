"""The training job store: SQLite in WAL mode, one row per job, one per reported epoch.

Every change is committed at once, so nothing about a finished job is lost when the
service stops; a job found queued or running at start was cut off by that stop and is
marked failed with the reason.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

UNFINISHED = ("queued", "running")
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    epochs INTEGER NOT NULL,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    accuracy REAL,
    best_checkpoint TEXT,
    model_version INTEGER,
    base_model TEXT,
    samples INTEGER NOT NULL,
    device TEXT,
    dataset TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS epochs (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    epoch INTEGER NOT NULL,
    accuracy REAL,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, epoch)
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
"""
FIELDS = frozenset({"status", "epochs_done", "accuracy", "best_checkpoint", "model_version",
                    "device", "error", "started_at", "finished_at"})


def _iso(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp, UTC).isoformat() if stamp is not None else None


class JobStore:
    """Jobs of the Trainer; safe to call from its event loop and its threads."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def create(self, kind: str, name: str, epochs: int, samples: int,
               base_model: str | None, dataset: str | None = None) -> str:
        job_id = uuid.uuid4().hex[:16]
        with self.lock:
            self.db.execute(
                "INSERT INTO jobs (id, kind, status, name, epochs, samples, base_model, "
                "dataset, created_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, kind, name, epochs, samples, base_model, dataset, time.time()))
        return job_id

    def update(self, job_id: str, **fields: Any) -> None:
        unknown = set(fields) - FIELDS
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self.lock:
            # The column names were checked against FIELDS above.
            self.db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*fields.values(), job_id))

    def add_epoch(self, job_id: str, epoch: int, accuracy: float | None) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO epochs (job_id, epoch, accuracy, at) "
                            "VALUES (?, ?, ?, ?)", (job_id, epoch, accuracy, time.time()))
            self.db.execute("UPDATE jobs SET epochs_done = MAX(epochs_done, ?), accuracy = ? "
                            "WHERE id = ?", (epoch, accuracy, job_id))

    def epochs(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute("SELECT epoch, accuracy, at FROM epochs WHERE job_id = ? "
                                   "AND epoch > ? ORDER BY epoch", (job_id, after)).fetchall()
        return [{"epoch": r["epoch"], "accuracy": r["accuracy"], "at": _iso(r["at"])}
                for r in rows]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC "
                                   "LIMIT ?", (limit,)).fetchall()
        return [_job(row) for row in rows]

    def unfinished(self) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT * FROM jobs WHERE status IN ('queued', 'running') "
                                  "ORDER BY created_at LIMIT 1").fetchone()
        return _job(row) if row else None

    def fail_unfinished(self, reason: str) -> dict[str, str | None]:
        """Mark every queued or running job failed (a stop cut them off); their datasets."""
        with self.lock:
            cut = {r["id"]: r["dataset"] for r in self.db.execute(
                "SELECT id, dataset FROM jobs WHERE status IN ('queued', 'running')")}
            self.db.execute("UPDATE jobs SET status = 'failed', error = ?, finished_at = ? "
                            "WHERE status IN ('queued', 'running')", (reason, time.time()))
        return cut


def _job(row: sqlite3.Row) -> dict[str, Any]:
    """The job as GET /v1/train/jobs/{id} shows it."""
    accuracy = row["accuracy"]
    epochs = max(int(row["epochs"]), 1)
    done = row["status"] == "done"
    return {
        "job_id": row["id"],
        "kind": row["kind"],
        "status": row["status"],
        "epochs": row["epochs"],
        "epochs_done": row["epochs_done"],
        "progress": 1.0 if done else round(min(row["epochs_done"] / epochs, 1.0), 4),
        "accuracy": accuracy,
        "cer": round(1.0 - accuracy, 6) if accuracy is not None else None,
        "best_checkpoint": row["best_checkpoint"],
        "model": {"name": row["name"], "version": row["model_version"]},
        "base_model": row["base_model"],
        "samples": row["samples"],
        "device": row["device"],
        "error": row["error"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
    }
