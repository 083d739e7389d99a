"""The blla engine's start: a model that does not load is set aside, the bundled one used."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from deployments.engines.segmentation.blla import load_or_set_aside


def test_an_unloadable_model_is_renamed_and_blla_serves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "blla-custom.mlmodel"
    broken.write_bytes(b"this is not a model" * 50)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        model = load_or_set_aside(broken)
    assert model is not None and not broken.exists()
    assert (tmp_path / "blla-custom.mlmodel.incompatible").exists()
    assert "cannot be loaded" in caplog.text and "bundled blla" in caplog.text


def test_only_loading_errors_are_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    model = tmp_path / "m.mlmodel"
    model.write_bytes(b"x")

    def crash(path: object) -> None:
        raise MemoryError("a real problem, not a bad file")

    monkeypatch.setattr("kraken.tasks.SegmentationTaskModel.load_model", crash)
    with pytest.raises(MemoryError):
        load_or_set_aside(model)
    assert model.exists()  # nothing renamed for a failure that is not the file's
