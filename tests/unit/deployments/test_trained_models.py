"""Trained model versions: written whole, activated, pruned to three backups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployments.trained_models import BACKUPS, TrainedModels
from serve_app.kernel.errors import InvalidInput, NotFound


def _weights(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"best-{content.decode()}.safetensors"
    path.write_bytes(content)
    return path


def test_versions_count_up_and_only_activation_makes_one_active(tmp_path: Path) -> None:
    store = TrainedModels(tmp_path / "models")
    first = store.publish("family", _weights(tmp_path, b"1"), {"kind": "train", "job_id": "j1"})
    second = store.publish("family", _weights(tmp_path, b"2"), {"kind": "train"})
    assert (first.version, second.version) == (1, 2)
    assert store.active("family") is None
    store.activate("family", 2)
    active = store.active("family")
    assert active is not None and active.path.read_bytes() == b"2"
    store.activate("family", 1)  # a rollback
    assert store.active_number("family") == 1
    assert [v.describe()["active"] for v in store.versions("family")] == [True, False]
    with pytest.raises(NotFound, match="no version 9"):
        store.activate("family", 9)
    with pytest.raises(InvalidInput):
        store.versions("../escape")


def test_the_active_version_and_three_backups_are_kept(tmp_path: Path) -> None:
    store = TrainedModels(tmp_path / "models")
    for number in range(1, 4):
        store.publish("m", _weights(tmp_path, str(number).encode()), {})
    store.activate("m", 1)
    for number in range(4, 8):
        store.publish("m", _weights(tmp_path, str(number).encode()), {})
    kept = [v.version for v in store.versions("m")]
    assert kept == [1, 5, 6, 7] and len(kept) == BACKUPS + 1
    assert sorted(p.name for p in (tmp_path / "models" / "m").iterdir()) == [
        "ACTIVE", "v1.json", "v1.safetensors", "v5.json", "v5.safetensors", "v6.json",
        "v6.safetensors", "v7.json", "v7.safetensors"]


def test_a_copy_cut_short_leaves_no_version_and_its_partial_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TrainedModels(tmp_path / "models")

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("deployments.trained_models.shutil.copyfileobj", fail)
    with pytest.raises(OSError, match="No space"):
        store.publish("m", _weights(tmp_path, b"1"), {})
    assert store.versions("m") == []
    assert not list((tmp_path / "models").rglob("*.partial"))
    stale = tmp_path / "models" / "m" / ".v2.safetensors.abc.partial"  # a killed process's
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    assert store.remove_partials() == [stale] and not stale.exists()
