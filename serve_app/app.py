"""build_app(args) -> Application: the serve_config import path that wires the graph.

It reads settings and config/, places every model on the GPU with a fractional
num_gpus from its footprint (or on the CPU when the cluster has no GPU or the
profile says so) and binds Ingress -> OCR, Segmentation, Embedding, Rerank,
ResidencyController. The embedding-similarity rerank has no deployment: the Ingress
ranks by it through the Embedding (ADR 015). A model set that cannot fit fails here,
with the numbers, rather than leaving replicas PENDING forever.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application, Deployment

from deployments.embedding import Embedding
from deployments.engines.embedding import ENGINES as EMBEDDING_ENGINES
from deployments.engines.ocr import ENGINES as OCR_ENGINES
from deployments.engines.ocr import ocr_engines
from deployments.engines.rerank import ENGINES as RERANK_ENGINES
from deployments.engines.segmentation import ENGINES as SEGMENTATION_ENGINES
from deployments.models import ModelSpec, load_catalog
from deployments.ocr import OCR
from deployments.rerank import Rerank
from deployments.residency.controller import ResidencyController
from deployments.residency.profiles import Profile, load_profile
from deployments.segmentation import Segmentation
from deployments.training.trainer import ENGINES as TRAINING_ENGINES
from deployments.training.trainer import Trainer
from serve_app.ingress import Ingress
from serve_app.kernel.settings import ConfigError, Settings
from serve_app.pipeline import Handles
from serve_app.similarity import SIMILARITY_ENGINE

logger = logging.getLogger("ray.serve")

# deployment name -> (kind of model it serves, engines it knows). The Rerank's models
# include the embedding-similarity rerank, which the Ingress runs in its place (ADR 015).
DEPLOYMENTS: dict[str, tuple[str, Collection[str]]] = {
    "OCR": ("ocr", OCR_ENGINES),
    "Segmentation": ("segmentation", SEGMENTATION_ENGINES),
    "Embedding": ("embedding", EMBEDDING_ENGINES),
    "Rerank": ("rerank", {*RERANK_ENGINES, SIMILARITY_ENGINE}),
    "Trainer": ("training", TRAINING_ENGINES),
}


class BuildError(ConfigError):
    """The requested graph cannot run on this cluster; the message has the numbers."""


class AppArgs(BaseModel):
    """The `args:` of a serve config. A model of None leaves its deployment out."""

    model_config = ConfigDict(extra="forbid")

    ocr_model: str | None = "rapidocr"
    ocr_engines: list[str] = Field(
        default_factory=list, description="More OCR models the OCR replicas hold, chosen "
        "per request by engine name (e.g. ollama-vlm for engine llm).")
    segmentation_model: str | None = "kraken-blla"
    embedding_model: str | None = "all-minilm-l6-v2"
    rerank_model: str | None = "embedding-similarity"
    training_model: str | None = Field(
        "ketos", description="The Trainer (kraken's ketos); null leaves training out.")
    gpu_total_mb: int | None = Field(
        None, gt=0, description="Memory of one GPU; read from NVML when omitted."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="Settings by field or env name; the env wins."
    )
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Catalog entries added to config/models.yaml."
    )
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Residency profiles added to config/profiles.yaml."
    )
    deployment_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per deployment name: Serve .options() overrides."
    )


def plan_gpu_shares(
    specs: dict[str, ModelSpec],
    replicas: dict[str, int],
    cluster_gpus: float,
    gpu_total_mb: int | None,
    profile: Profile,
) -> dict[str, float]:
    """num_gpus per replica = footprint / GPU size; refuse a set that crowds out the LLM."""
    if cluster_gpus <= 0 or not profile.use_gpu:
        return dict.fromkeys(specs, 0.0)
    if not gpu_total_mb:
        raise BuildError(
            "the cluster has GPUs but their memory is unknown here (no NVML on this node): "
            "set gpu_total_mb in the application's args"
        )
    needed = {name: spec.footprint_mb * replicas.get(name, 1) for name, spec in specs.items()}
    budget = gpu_total_mb - profile.llm_reserved_mb
    if sum(needed.values()) > budget:
        parts = ", ".join(f"{name} {mb} MB" for name, mb in needed.items())
        raise BuildError(
            f"the models need {sum(needed.values())} MB of VRAM ({parts}) but a GPU has "
            f"{gpu_total_mb} MB, of which profile {profile.name!r} keeps "
            f"{profile.llm_reserved_mb} MB for the LLM: {budget} MB are left. Use fewer "
            "replicas or smaller models, or another RESIDENCY_PROFILE."
        )
    return {
        name: round(max(spec.footprint_mb / gpu_total_mb, 0.001), 4) if spec.footprint_mb else 0.0
        for name, spec in specs.items()
    }


def _choose_models(args: AppArgs, catalog: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    """The model of each deployment; OCR's footprint includes its extra engines."""
    wanted = {
        "OCR": args.ocr_model,
        "Segmentation": args.segmentation_model,
        "Embedding": args.embedding_model,
        "Rerank": args.rerank_model,
        "Trainer": args.training_model,
    }
    chosen = {}
    for deployment, model in wanted.items():
        if model is None:
            continue
        kind, engines = DEPLOYMENTS[deployment]
        spec = catalog.get(model)
        if spec is None:
            raise BuildError(f"{deployment}: no model {model!r} in the catalog; "
                             f"known: {sorted(catalog)}")
        if spec.kind != kind or spec.engine not in engines:
            raise BuildError(f"{deployment}: model {model!r} is a {spec.kind} model with engine "
                             f"{spec.engine!r}; this deployment runs {kind} engines "
                             f"{sorted(engines)}")
        chosen[deployment] = spec
    if "Rerank" in chosen and chosen["Rerank"].engine == SIMILARITY_ENGINE and (
        "Embedding" not in chosen
    ):
        raise BuildError(f"rerank by {SIMILARITY_ENGINE} needs an embedding_model")
    if args.ocr_engines and "OCR" not in chosen:
        raise BuildError("ocr_engines needs an ocr_model")
    extras = []
    for model in args.ocr_engines:
        spec = catalog.get(model)
        if spec is None or spec.kind != "ocr" or spec.engine not in OCR_ENGINES:
            raise BuildError(f"ocr_engines: {model!r} is not an OCR model of the catalog")
        extras.append(spec)
    engines = [spec.engine for spec in (chosen.get("OCR"), *extras) if spec]
    doubled = sorted({engine for engine in engines if engines.count(engine) > 1})
    if doubled:
        raise BuildError(f"ocr_model and ocr_engines name several models of engine "
                         f"{', '.join(doubled)}: an OCR replica serves one model per engine")
    if "Segmentation" not in chosen and any(
            spec.engine == "kraken" for spec in (chosen.get("OCR"), *extras) if spec):
        raise BuildError("the kraken OCR engine recognises segmented lines: it needs a "
                         "segmentation_model")
    if extras:  # the OCR replicas hold them all: plan the GPU for their sum
        primary = chosen["OCR"]
        chosen["OCR"] = primary.model_copy(update={"footprint_mb": primary.footprint_mb + sum(
            e.footprint_mb for e in extras)})
    return chosen


def _cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0)) if ray.is_initialized() else 0.0


def _nvml_gpu_total_mb() -> int | None:
    from deployments.residency.monitors import open_monitor

    gpus = open_monitor().snapshot()
    return min(gpu.total_mb for gpu in gpus) if gpus else None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_app(args: AppArgs | dict[str, Any] | None = None) -> Application:
    """The whole graph, ready for serve.run / `serve run` / `serve deploy`."""
    args = AppArgs.model_validate(args or {})
    settings = Settings.load(args.settings)
    settings.ensure_dirs()
    profile = load_profile(settings.residency_profile, args.profiles)
    catalog = load_catalog(args.models)
    chosen = _choose_models(args, catalog)
    # The Ingress ranks by similarity itself: no replica, no GPU share, nothing to move.
    similarity = chosen.pop("Rerank") if chosen.get("Rerank") and (
        chosen["Rerank"].engine == SIMILARITY_ENGINE) else None

    cluster_gpus = _cluster_gpus()
    gpu_total_mb = args.gpu_total_mb or (_nvml_gpu_total_mb() if cluster_gpus else None)
    replicas = {
        name: int(args.deployment_options.get(name, {}).get("num_replicas", 1))
        for name in chosen
    }
    shares = plan_gpu_shares(chosen, replicas, cluster_gpus, gpu_total_mb, profile)
    if not any(shares.values()):
        logger.info("no GPU in the cluster (or profile %s): every model runs on the CPU",
                    profile.name)

    def options(name: str, num_gpus: float, deployment: Deployment) -> dict[str, Any]:
        own_env = getattr(deployment.func_or_class, "process_env", {})
        base = {"ray_actor_options": {
            "num_gpus": num_gpus,
            "runtime_env": {"env_vars": {**settings.library_env(), **own_env}},
        }}
        return _merge(base, args.deployment_options.get(name, {}))

    on_gpu = {name: chosen[name].footprint_mb for name in chosen if shares[name]}
    residency = ResidencyController.options(
        **args.deployment_options.get("ResidencyController", {})
    ).bind(profile, on_gpu, bool(on_gpu), settings)
    extras = tuple(catalog[name] for name in args.ocr_engines)
    bound: dict[str, Any] = {}
    if "OCR" in chosen:
        primary = catalog[chosen["OCR"].name]
        bound["OCR"] = OCR.options(**options("OCR", shares["OCR"], OCR)).bind(
            primary, settings, residency, extras,
            {"busy": profile.llm_keep_alive_busy, "idle": profile.llm_keep_alive_idle,
             "reason": f"profile {profile.name}"})
    for name, cls in (("Segmentation", Segmentation), ("Embedding", Embedding),
                      ("Rerank", Rerank)):
        if name in chosen:
            bound[name] = cls.options(**options(name, shares[name], cls)).bind(
                chosen[name], settings, residency)
    if "Trainer" in chosen:
        bound["Trainer"] = Trainer.options(**options("Trainer", shares["Trainer"], Trainer)).bind(
            settings, residency)
    for name in chosen:
        logger.info("deployment %s: model %s, num_gpus %s", name, chosen[name].name, shares[name])
    if similarity:
        logger.info("rerank: model %s, by the Ingress through the Embedding", similarity.name)
    handles = Handles(ocr=bound.get("OCR"), segmentation=bound.get("Segmentation"),
                      embedding=bound.get("Embedding"), rerank=bound.get("Rerank"),
                      trainer=bound.get("Trainer"))
    deployed_ocr = ocr_engines((primary, *extras)) if "OCR" in chosen else None
    return Ingress.options(**args.deployment_options.get("Ingress", {})).bind(
        settings,
        {name: spec.name for name, spec in chosen.items()},
        handles,
        residency,
        deployed_ocr,
        similarity.name if similarity else None,
    )


__all__ = ["AppArgs", "BuildError", "build_app", "plan_gpu_shares"]
