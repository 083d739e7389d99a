"""The one typed settings object: environment > config-file args > defaults.

Nothing else in the service reads os.environ. The builder loads Settings once on
the driver and hands the object to every deployment, so every replica sees the
same values no matter which node it lands on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(RuntimeError):
    """The service cannot start with this configuration; the message says what to set."""


class Settings(BaseSettings):
    """Service settings. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    api_key: SecretStr | None = Field(None, alias="OCR_SIDECAR_API_KEY")
    auth_mode: Literal["api-key", "network-isolation"] = Field(
        "api-key", alias="OCR_SIDECAR_AUTH_MODE"
    )
    upload_base: Path | None = Field(None, alias="OCR_SIDECAR_UPLOAD_BASE")
    allowed_pdf_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="ALLOWED_PDF_HOSTS"
    )
    training_token: SecretStr | None = Field(None, alias="OCR_TRAINING_TOKEN")
    data_dir: Path = Field(Path("./data"), alias="DATA_DIR")
    state_dir: Path | None = Field(None, alias="STATE_DIR")
    model_cache_dir: Path | None = Field(None, alias="MODEL_CACHE_DIR")
    tmp_dir: Path | None = Field(None, alias="TMPDIR")
    # What the install built beside itself, read only: the bundled models' ONNX exports
    # (`ocr-graph models export --installed`, run by `make setup` and the image's build),
    # so a first start on an empty MODEL_CACHE_DIR loads what a restart loads.
    installed_model_cache_dir: Path = Field(
        default_factory=lambda: Path(sys.prefix) / "share" / "ocr-graph",
        alias="INSTALLED_MODEL_CACHE_DIR")
    ollama_url: str = Field("http://127.0.0.1:11434", alias="OLLAMA_URL")
    ollama_timeout_s: float = Field(120.0, gt=0, alias="OLLAMA_TIMEOUT_S")
    # Bearer key for an OpenAI-compatible LLM server (llm engine with `api: openai`).
    llm_api_key: SecretStr | None = Field(None, alias="LLM_API_KEY")
    # Pages of one document in flight at once (rendered and sent to the OCR engines).
    pages_in_flight: int = Field(8, ge=1, le=64, alias="OCR_PAGES_IN_FLIGHT")
    # Processes of each ingress replica that read long PDFs' text layers in parallel
    # (PyMuPDF holds the GIL, so threads cannot); below 2, the render thread reads them.
    text_layer_processes: int = Field(2, ge=0, le=64, alias="OCR_TEXT_LAYER_PROCESSES")
    residency_profile: str = Field("llm-first", alias="RESIDENCY_PROFILE")
    blla_model_path: Path | None = Field(None, alias="BLLA_MODEL_PATH")
    residency_poll_s: float = Field(1.0, gt=0, alias="RESIDENCY_POLL_S")
    # Names or pids of the LLM's GPU processes, beyond ollama's own (comma list).
    llm_processes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="LLM_PROCESSES")
    # Hosts without NVML (tests, demos): pretend one GPU of this size, the LLM's share read
    # from Ollama's /api/ps at OLLAMA_URL.
    vram_fake_total_mb: int | None = Field(None, gt=0, alias="VRAM_FAKE_TOTAL_MB")

    # Limits: every one is enforced while reading, before any work is done.
    max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0, alias="OCR_MAX_UPLOAD_BYTES")
    # How much lower than the ingress and proxy the model replicas run on the CPU (nice
    # increment): the front keeps answering (refusals, health) while models compute, and a
    # cold start is 3-5 s shorter. 0 gives the Embedding 4-5% more throughput (ADR 012).
    model_niceness: int = Field(4, ge=0, le=19, alias="MODEL_REPLICA_NICENESS")
    # Document bytes one ingress replica holds at once, across requests: 503 beyond.
    max_bytes_in_flight: int = Field(1024**3, gt=0, alias="OCR_MAX_BYTES_IN_FLIGHT")
    max_pages: int = Field(200, gt=0, alias="OCR_MAX_PAGES")
    max_page_pixels: int = Field(60_000_000, gt=0, alias="OCR_MAX_PAGE_PIXELS")
    # What runs the embedding encoder on a machine without a GPU: ONNX Runtime, 15-23%
    # faster there (ADR 013), or torch, as on a GPU.
    embed_cpu_runtime: Literal["onnxruntime", "torch"] = Field(
        "onnxruntime", alias="EMBED_CPU_RUNTIME")
    max_texts: int = Field(1024, gt=0, alias="EMBED_MAX_TEXTS")
    max_text_chars: int = Field(32_000, gt=0, alias="EMBED_MAX_TEXT_CHARS")
    # Texts one ingress replica has in flight to the Embedding, across requests: 503
    # beyond. 5120 are about 18 s of MiniLM on 2 cores (bench/overload.py).
    max_texts_in_flight: int = Field(5120, gt=0, alias="EMBED_MAX_TEXTS_IN_FLIGHT")
    url_timeout_s: float = Field(30.0, gt=0, alias="URL_FETCH_TIMEOUT_S")
    # The longest one call to a deployment may take (a page, an embedding batch): 504 after.
    call_timeout_s: float = Field(300.0, gt=0, alias="DEPLOYMENT_CALL_TIMEOUT_S")

    # Training (POST /v1/train, /v1/segtrain).
    # Fewer usable samples (lines for train, pages for segtrain) than this: 422.
    training_min_samples: int = Field(10, ge=1, alias="TRAINING_MIN_SAMPLES")
    training_max_epochs: int = Field(200, ge=1, alias="TRAINING_MAX_EPOCHS")
    training_max_upload_bytes: int = Field(2 * 1024**3, gt=0, alias="TRAINING_MAX_UPLOAD_BYTES")
    # CPU threads of one ketos run (its --threads).
    training_threads: int = Field(2, ge=1, le=256, alias="TRAINING_THREADS")
    # segtrain on a base model taller than this trains a copy of it at this height, which
    # later runs keep as their base (blla's 1800 px do not fit small GPUs or CPUs). 0: never.
    segtrain_max_height: int = Field(800, ge=0, alias="SEGTRAIN_MAX_HEIGHT")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: an operator's env var beats what a config file says.
        return env_settings, init_settings

    @field_validator("allowed_pdf_hosts", "llm_processes", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @model_validator(mode="after")
    def _derive_dirs(self) -> Settings:
        data = self.data_dir.expanduser().absolute()
        cache = (self.model_cache_dir or data / "models").expanduser().absolute()
        derived = {
            "data_dir": data,
            "state_dir": (self.state_dir or data / "state").expanduser().absolute(),
            "model_cache_dir": cache,
            "tmp_dir": (self.tmp_dir or cache / ".tmp").expanduser().absolute(),
            "upload_base": (self.upload_base or data / "uploads").expanduser().absolute(),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)
        return self

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> Settings:
        """Read env + config overrides and refuse configurations that must not start."""
        settings = cls(**(overrides or {}))
        if settings.auth_mode == "api-key" and not _secret(settings.api_key):
            raise ConfigError(
                "OCR_SIDECAR_API_KEY is not set: set it to a long random secret "
                "(or set OCR_SIDECAR_AUTH_MODE=network-isolation when a network boundary "
                "alone protects the service)."
            )
        if settings.max_bytes_in_flight < settings.max_upload_bytes:
            raise ConfigError(
                f"OCR_MAX_BYTES_IN_FLIGHT ({settings.max_bytes_in_flight}) is below "
                f"OCR_MAX_UPLOAD_BYTES ({settings.max_upload_bytes}): a largest document "
                "could never be read; raise it or lower the upload limit")
        if settings.max_texts_in_flight < settings.max_texts:
            raise ConfigError(
                f"EMBED_MAX_TEXTS_IN_FLIGHT ({settings.max_texts_in_flight}) is below "
                f"EMBED_MAX_TEXTS ({settings.max_texts}): a largest request could never "
                "be embedded; raise it or lower EMBED_MAX_TEXTS")
        if settings.blla_model_path is not None:
            path = settings.blla_model_path.expanduser().absolute()
            stores = (settings.model_cache_dir, settings.trained_models_dir)
            if not any(store is not None and path.is_relative_to(store) for store in stores):
                raise ConfigError(
                    f"BLLA_MODEL_PATH {path} is outside the model store: put the model "
                    f"under MODEL_CACHE_DIR ({settings.model_cache_dir}) and point "
                    "BLLA_MODEL_PATH there")
        return settings

    @property
    def trained_models_dir(self) -> Path:
        """Where training writes models: STATE_DIR/models."""
        assert self.state_dir is not None
        return self.state_dir / "models"

    @property
    def training_dir(self) -> Path:
        """The job database and uploaded training data: STATE_DIR/training."""
        assert self.state_dir is not None
        return self.state_dir / "training"

    def library_env(self) -> dict[str, str]:
        """Environment for model replicas: caches inside MODEL_CACHE_DIR, hubs offline."""
        cache = str(self.model_cache_dir)
        return {
            "HF_HOME": f"{cache}/hf",
            "TORCH_HOME": f"{cache}/torch",
            "XDG_CACHE_HOME": cache,
            "TMPDIR": str(self.tmp_dir),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def ensure_dirs(self) -> None:
        """Create the writable directories; the staging dir shares the cache's filesystem."""
        for path in (self.state_dir, self.model_cache_dir, self.tmp_dir, self.upload_base,
                     self.trained_models_dir, self.training_dir):
            assert path is not None
            path.mkdir(parents=True, exist_ok=True)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""
