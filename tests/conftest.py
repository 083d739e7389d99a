"""Shared fixtures: a clean settings environment for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.kernel.settings import Settings

# Every environment variable the service reads: tests never inherit the machine's.
SETTINGS_ENV = sorted(field.alias or name.upper() for name, field in Settings.model_fields.items())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No settings from the machine running the tests; DATA_DIR in a temp dir, and no
    install's exports (`make setup` built them): an engine's first start exports."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INSTALLED_MODEL_CACHE_DIR", str(tmp_path / "installed"))
    return monkeypatch


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Random-weight models (BGE-M3 and reranker layout, a kraken recognizer, surya's
    detector and recognizer), built once per session."""
    from tests.fixtures.tiny_models import (
        build_tiny_kraken_recognizer,
        build_tiny_m3,
        build_tiny_reranker,
        build_tiny_surya,
    )

    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "m3": str(build_tiny_m3(root / "tiny-m3")),
        "reranker": str(build_tiny_reranker(root / "tiny-reranker")),
        "kraken": str(build_tiny_kraken_recognizer(root / "kraken" / "tiny-rec.mlmodel")),
        "surya": str(build_tiny_surya(root / "surya")),
    }
