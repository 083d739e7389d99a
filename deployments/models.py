"""The catalog of config/models.yaml and where each model's weights are.

Replicas never download. A model is either bundled with a package (rapidocr, kraken's
blla, the MiniLM package) or lies under MODEL_CACHE_DIR, fetched there by `ocr-graph
models pull` from its `source` (deployments/model_store.py) or copied by hand; a missing
one fails the replica's start with a message that names the model, the path and the
command that fetches it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployments.trained_models import TrainedModels
from serve_app.kernel.errors import ModelMissing
from serve_app.kernel.settings import Settings

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
Kind = Literal["ocr", "segmentation", "embedding", "rerank", "training"]


class HubSource(BaseModel):
    """A Hugging Face repo pinned to one commit (what `huggingface-cli download` takes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hf: str = Field(examples=["BAAI/bge-m3"])
    revision: str = Field(pattern=r"^[0-9a-f]{40}$", description="A commit hash, never a "
                          "branch: the same files on every pull.")
    files: list[str] | None = Field(None, description="Only these (glob patterns).")


class UrlSource(BaseModel):
    """One file at a URL, with the sha256 it must have."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ModelSpec(BaseModel):
    """One catalog entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Kind
    engine: str
    footprint_mb: int = Field(ge=0)
    package: str | None = None
    path: str | None = None
    # A model trained here (POST /v1/train): its active version wins over `path`.
    trained: str | None = None
    # Where `ocr-graph models pull` fetches the files at `path` from.
    source: HubSource | UrlSource | None = None
    # A replica that starts without the files fetches them from `source` itself; off, only
    # `ocr-graph models pull` does (sites that must not download at start keep it off).
    pull_on_start: bool = False
    pooling: Literal["cls", "mean"] = "cls"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pull_needs_a_source(self) -> ModelSpec:
        if self.pull_on_start and (self.source is None or self.path is None):
            raise ValueError(f"model {self.name!r}: pull_on_start needs a source and a path "
                             "in the cache to pull to")
        return self


def read_yaml(name: str, config_dir: Path | None = None) -> dict[str, Any]:
    """A YAML file from the config directory."""
    with open((config_dir or CONFIG_DIR) / name, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def load_catalog(
    extra: dict[str, dict[str, Any]] | None = None, config_dir: Path | None = None
) -> dict[str, ModelSpec]:
    """config/models.yaml plus entries a deployment config adds or overrides."""
    entries = dict(read_yaml("models.yaml", config_dir).get("models", {}))
    entries.update(extra or {})
    return {name: ModelSpec(name=name, **entry) for name, entry in entries.items()}


def resolve_weights(spec: ModelSpec, settings: Settings) -> Path | None:
    """The local path of a model's weights; None means the engine's bundled default."""
    active = TrainedModels(settings.trained_models_dir).active(spec.trained) if (
        spec.trained) else None
    if active is not None:
        path = active.path
    elif spec.engine == "kraken-blla" and settings.blla_model_path:
        path = settings.blla_model_path
    elif spec.package:
        package, _, inner = spec.package.partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ModelMissing(
                f"model {spec.name!r} needs the Python package {package!r}: pip install it"
            )
        path = Path(next(iter(found.submodule_search_locations))) / inner
    elif spec.path:
        path = Path(spec.path)
        if not path.is_absolute():
            assert settings.model_cache_dir is not None
            path = settings.model_cache_dir / path
    else:
        return None
    if not path.exists():
        how = (f"run `ocr-graph models pull {spec.name}` on this node" if spec.source else
               "copy its files there on a connected host (docs/operations.md, 'Models "
               "without a network')")
        raise ModelMissing(f"model {spec.name!r} is not at {path}: {how}",
                           detail={"model": spec.name, "path": str(path)})
    return path


def required_weights(spec: ModelSpec, settings: Settings) -> Path:
    """resolve_weights for engines that bundle no default (surya, kraken recognition)."""
    path = resolve_weights(spec, settings)
    if path is None:
        raise ModelMissing(f"model {spec.name!r} names no weights: give it a path under "
                           "MODEL_CACHE_DIR (its engine bundles none)",
                           detail={"model": spec.name})
    return path
