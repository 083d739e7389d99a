"""Shared fixtures: a clean settings environment for every test."""

from __future__ import annotations

import pytest

SETTINGS_ENV = [
    "OCR_SIDECAR_API_KEY", "OCR_SIDECAR_AUTH_MODE", "OCR_SIDECAR_UPLOAD_BASE", "ALLOWED_PDF_HOSTS",
    "OCR_TRAINING_TOKEN", "DATA_DIR", "STATE_DIR", "MODEL_CACHE_DIR", "TMPDIR", "OLLAMA_URL",
    "RESIDENCY_PROFILE", "BLLA_MODEL_PATH", "OCR_MAX_UPLOAD_BYTES", "OCR_MAX_PAGES",
    "OCR_MAX_PAGE_PIXELS", "EMBED_MAX_TEXTS", "EMBED_MAX_TEXT_CHARS", "LLM_API_KEY",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path):  # type: ignore[no-untyped-def]
    """No settings from the machine running the tests; DATA_DIR in a temp dir."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
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
