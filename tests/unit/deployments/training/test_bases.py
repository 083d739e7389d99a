"""Segmentation bases taller than SEGTRAIN_MAX_HEIGHT are trained as a smaller copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.trained_models import TrainedModels
from deployments.training import bases
from serve_app.kernel.errors import InvalidInput


def test_blla_is_copied_once_at_the_maximum_height(tmp_path: Path) -> None:
    blla = bases.bundled_blla()
    assert bases.input_height(blla) == 1800
    copy = bases.at_most(blla, 800, tmp_path)
    assert copy.parent == tmp_path and bases.input_height(copy) == 800
    stamp = copy.stat().st_mtime_ns
    assert bases.at_most(blla, 800, tmp_path) == copy  # later runs start from that copy
    assert copy.stat().st_mtime_ns == stamp
    assert bases.at_most(copy, 800, tmp_path) == copy  # already small enough
    assert bases.at_most(blla, 0, tmp_path) == blla  # 0: never copied
    from kraken.tasks import SegmentationTaskModel

    SegmentationTaskModel.load_model(copy)  # a model the service can serve


def test_base_models_must_be_active_and_of_the_job_s_kind(tmp_path: Path) -> None:
    store = TrainedModels(tmp_path)
    assert bases.resolve_base("train", None, store) is None
    assert bases.resolve_base("segtrain", "blla", store) == bases.bundled_blla()
    with pytest.raises(InvalidInput, match="no active version"):
        bases.resolve_base("train", "family", store)
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    store.publish("layout", weights, {"kind": "segtrain"})
    store.activate("layout", 1)
    with pytest.raises(InvalidInput, match="is a segtrain model"):
        bases.resolve_base("train", "layout", store)
    assert bases.resolve_base("segtrain", "layout", store) == store.active("layout").path  # type: ignore[union-attr]
