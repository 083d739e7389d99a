"""The job store keeps every job across restarts and fails the ones a stop cut off."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.training.jobs import JobStore


def test_a_job_through_its_life(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    job_id = store.create("train", "archive-rec", 4, 30, None, str(tmp_path / "data"))
    assert store.get(job_id)["status"] == "queued"  # type: ignore[index]
    store.update(job_id, status="running", device="cpu", started_at=1.0)
    store.add_epoch(job_id, 1, 0.5)
    store.add_epoch(job_id, 2, 0.75)
    job = store.get(job_id)
    assert job is not None
    assert (job["epochs_done"], job["progress"], job["accuracy"]) == (2, 0.5, 0.75)
    assert job["cer"] == pytest.approx(0.25)
    assert [e["epoch"] for e in store.epochs(job_id)] == [1, 2]
    assert [e["epoch"] for e in store.epochs(job_id, after=1)] == [2]
    store.update(job_id, status="done", model_version=3, finished_at=2.0)
    job = store.get(job_id)
    assert job is not None and job["progress"] == 1.0
    assert job["model"] == {"name": "archive-rec", "version": 3}
    with pytest.raises(ValueError, match="not job fields"):
        store.update(job_id, name="x")


def test_a_restart_fails_unfinished_jobs_and_loses_nothing_else(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    done = store.create("train", "a", 1, 10, None)
    store.update(done, status="done", model_version=1, finished_at=1.0)
    running = store.create("segtrain", "b", 5, 6, "blla", "/data/b")
    store.update(running, status="running")
    store.close()

    reopened = JobStore(tmp_path / "jobs.db")
    assert reopened.fail_unfinished("interrupted by restart") == {running: "/data/b"}
    assert reopened.get(running)["error"] == "interrupted by restart"  # type: ignore[index]
    assert reopened.get(done)["status"] == "done"  # type: ignore[index]
    assert reopened.unfinished() is None
    assert reopened.fail_unfinished("again") == {}


def test_recent_lists_the_last_ten_newest_first(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    ids = [store.create("train", f"m{i}", 1, 10, None) for i in range(12)]
    assert [job["job_id"] for job in store.recent()] == ids[::-1][:10]
