"""Settings: refuse to start without a key, env beats config, directories derive."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.kernel.settings import ConfigError, Settings


def test_refuses_to_start_without_api_key(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="OCR_SIDECAR_API_KEY is not set"):
        Settings.load()


def test_network_isolation_mode_starts_without_key(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OCR_SIDECAR_AUTH_MODE", "network-isolation")
    assert Settings.load().api_key is None


def test_environment_beats_config_file_args(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "from-env")
    settings = Settings.load({"OCR_SIDECAR_API_KEY": "from-config", "OCR_MAX_PAGES": 7})
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "from-env"
    assert settings.max_pages == 7  # not in env: the config file's value


def test_directories_derive_from_data_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    settings = Settings.load()
    data = tmp_path / "data"
    assert settings.state_dir == data / "state"
    assert settings.model_cache_dir == data / "models"
    # Staging shares the model cache's filesystem so the final move is an atomic rename.
    assert settings.tmp_dir == data / "models" / ".tmp"
    assert settings.upload_base == data / "uploads"
    assert settings.library_env()["HF_HOME"].startswith(str(data / "models"))
    assert settings.library_env()["HF_HUB_OFFLINE"] == "1"


def test_allowed_hosts_are_a_comma_list(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    clean_env.setenv("ALLOWED_PDF_HOSTS", "dms.example.org, Files.Example.org ,")
    assert Settings.load().allowed_pdf_hosts == ["dms.example.org", "files.example.org"]


def test_secrets_do_not_show_in_repr(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "super-secret-value")
    assert "super-secret-value" not in repr(Settings.load())


def test_invalid_limit_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    clean_env.setenv("OCR_MAX_PAGES", "0")
    with pytest.raises(ValueError, match="OCR_MAX_PAGES"):
        Settings.load()


def test_blla_model_path_must_lie_in_the_model_store(clean_env: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    clean_env.setenv("MODEL_CACHE_DIR", str(tmp_path / "models"))
    clean_env.setenv("BLLA_MODEL_PATH", str(tmp_path / "elsewhere" / "blla.mlmodel"))
    with pytest.raises(ConfigError, match="outside the model store"):
        Settings.load()
    clean_env.setenv("BLLA_MODEL_PATH", str(tmp_path / "models" / "blla.mlmodel"))
    assert Settings.load().blla_model_path == tmp_path / "models" / "blla.mlmodel"


def test_a_byte_budget_below_the_largest_upload_refuses_to_start(
        clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="OCR_MAX_BYTES_IN_FLIGHT"):
        Settings.load({"OCR_SIDECAR_API_KEY": "k", "OCR_MAX_UPLOAD_BYTES": 1000,
                       "OCR_MAX_BYTES_IN_FLIGHT": 999})
    assert Settings.load({"OCR_SIDECAR_API_KEY": "k", "OCR_MAX_UPLOAD_BYTES": 1000,
                          "OCR_MAX_BYTES_IN_FLIGHT": 1000}).max_bytes_in_flight == 1000
