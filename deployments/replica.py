"""What every model replica reports about itself: model, device, GPU share."""

from __future__ import annotations

import os
from typing import Any

import ray

from deployments.models import ModelSpec


def best_device() -> str:
    """cuda when this replica was given a GPU that torch can use, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def replica_info(deployment: str, spec: ModelSpec, device: str) -> dict[str, Any]:
    """The ModelInfo body of /v1/capacity and /v1/models for one replica."""
    resources = ray.get_runtime_context().get_assigned_resources()
    return {
        "deployment": deployment,
        "model": spec.name,
        "kind": spec.kind,
        "engine": spec.engine,
        "device": device,
        "footprint_mb": spec.footprint_mb,
        "gpu_share": round(float(resources.get("GPU", 0.0)), 4),
        # Ray sets this for replicas with num_gpus > 0; it is what torch/CUDA will see.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "loaded": True,
    }
