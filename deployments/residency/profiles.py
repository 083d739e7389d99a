"""Residency profiles (config/profiles.yaml): how our models share the GPU with the LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployments.models import read_yaml


class Profile(BaseModel):
    """A residency profile from config/profiles.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    llm_reserved_mb: int = Field(ge=0)
    use_gpu: bool = True
    low_watermark_mb: int = Field(2048, ge=0, description="Evict below this much free VRAM.")
    high_watermark_mb: int = Field(4096, ge=0, description="Evict until / return above this.")
    hold_s: float = Field(30.0, ge=0, description="Calm time before a model returns.")
    eviction_order: tuple[str, ...] = ("Trainer", "Rerank", "Embedding", "Segmentation", "OCR")
    llm_keep_alive: str = Field("5m", description="keep_alive the LLM OCR engine sends.")


def load_profile(name: str, extra: dict[str, dict[str, Any]] | None = None,
                 config_dir: Path | None = None) -> Profile:
    """A profile from config/profiles.yaml (or extra); an unknown name lists the known ones."""
    profiles = {**read_yaml("profiles.yaml", config_dir).get("profiles", {}), **(extra or {})}
    if name not in profiles:
        raise ValueError(f"unknown RESIDENCY_PROFILE {name!r}; known: {sorted(profiles)}")
    return Profile(name=name, **profiles[name])
