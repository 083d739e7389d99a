"""Segmentation engines by name: the single registry of what can find baselines."""

from __future__ import annotations

from deployments.engines.segmentation.blla import KrakenBllaEngine

ENGINES: dict[str, type[KrakenBllaEngine]] = {KrakenBllaEngine.name: KrakenBllaEngine}

__all__ = ["ENGINES", "KrakenBllaEngine"]
