"""Residency: the profiles (how much VRAM the LLM keeps) and the controller deployment.

This version places every model once, at build time, from the profile's LLM
reservation; the controller reports VRAM and that placement to /v1/capacity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve

from deployments.models import read_yaml
from deployments.policy import Profile
from deployments.vram import open_monitor


def load_profile(name: str, config_dir: Path | None = None) -> Profile:
    """A profile from config/profiles.yaml; an unknown name lists the known ones."""
    profiles = read_yaml("profiles.yaml", config_dir).get("profiles", {})
    if name not in profiles:
        raise ValueError(f"unknown RESIDENCY_PROFILE {name!r}; known: {sorted(profiles)}")
    return Profile(name=name, **profiles[name])


@serve.deployment(name="ResidencyController", num_replicas=1, max_ongoing_requests=64)
class ResidencyController:
    """Singleton that reads the VRAM monitor and answers what is placed where."""

    def __init__(self, profile: Profile, placements: dict[str, str]):
        self.profile = profile
        self.placements = placements
        self.monitor = open_monitor()

    def capacity(self) -> dict[str, Any]:
        gpus = [gpu.as_dict() for gpu in self.monitor.snapshot()]
        return {
            "gpu_available": bool(gpus),
            "note": None if gpus else "no GPU visible to NVML on the controller's node",
            "gpus": gpus,
            "profile": self.profile.name,
            "llm_reserved_mb": self.profile.llm_reserved_mb,
            "decisions": [
                {"deployment": name, "device": device, "reason": "placed at build time"}
                for name, device in self.placements.items()
            ],
        }
