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
    llm_keep_alive_busy: str = Field(
        "5m", description="keep_alive the llm OCR engine sends while more pages of ours wait "
        "for the VLM: it stays loaded through a document instead of reloading per page.")
    llm_keep_alive_idle: str = Field(
        "30s", description="keep_alive with the last page in flight: the VLM stays this long "
        "for the next document, then frees its memory.")


def load_profile(name: str, extra: dict[str, dict[str, Any]] | None = None,
                 config_dir: Path | None = None) -> Profile:
    """A profile from config/profiles.yaml (or extra); an unknown name lists the known ones."""
    profiles = {**read_yaml("profiles.yaml", config_dir).get("profiles", {}), **(extra or {})}
    if name not in profiles:
        raise ValueError(f"unknown RESIDENCY_PROFILE {name!r}; known: {sorted(profiles)}")
    return Profile(name=name, **profiles[name])
