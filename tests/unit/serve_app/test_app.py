"""The app builder: GPU shares from footprints, refusals with numbers, no key no start."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.models import ModelSpec, load_catalog
from deployments.residency.profiles import load_profile
from serve_app.app import AppArgs, BuildError, build_app, plan_gpu_shares
from serve_app.kernel.settings import ConfigError
from tests.fixtures.cluster import local_default_args


def _spec(name: str, footprint: int) -> ModelSpec:
    return ModelSpec(name=name, kind="embedding", engine="flag-dense", footprint_mb=footprint)


def test_fraction_is_footprint_over_gpu_memory() -> None:
    specs = {"Embedding": _spec("e", 2400), "Rerank": _spec("r", 0)}
    shares = plan_gpu_shares(specs, {}, cluster_gpus=1, gpu_total_mb=24000,
                             profile=load_profile("balanced"))
    assert shares == {"Embedding": 0.1, "Rerank": 0.0}


def test_no_gpu_in_the_cluster_means_cpu_everywhere() -> None:
    shares = plan_gpu_shares({"Embedding": _spec("e", 2400)}, {}, cluster_gpus=0,
                             gpu_total_mb=None, profile=load_profile("llm-first"))
    assert shares == {"Embedding": 0.0}


def test_cpu_only_profile_leaves_the_gpu_to_the_llm() -> None:
    shares = plan_gpu_shares({"Embedding": _spec("e", 2400)}, {}, cluster_gpus=1,
                             gpu_total_mb=24000, profile=load_profile("cpu-only"))
    assert shares == {"Embedding": 0.0}


def test_a_set_that_does_not_fit_fails_with_the_numbers() -> None:
    specs = {"Embedding": _spec("e", 2600), "Rerank": _spec("r", 2600)}
    with pytest.raises(BuildError) as caught:
        plan_gpu_shares(specs, {"Embedding": 2}, cluster_gpus=1, gpu_total_mb=16000,
                        profile=load_profile("llm-first"))
    message = str(caught.value)
    for number in ("7800 MB", "16000 MB", "12288 MB", "3712 MB"):
        assert number in message


def test_gpus_of_unknown_size_are_refused() -> None:
    with pytest.raises(BuildError, match="gpu_total_mb"):
        plan_gpu_shares({"Embedding": _spec("e", 1)}, {}, cluster_gpus=1, gpu_total_mb=None,
                        profile=load_profile("balanced"))


def test_catalog_has_the_embedded_default() -> None:
    catalog = load_catalog()
    assert {"rapidocr", "kraken-blla", "all-minilm-l6-v2", "embedding-similarity"} <= set(catalog)


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="llm-first"):
        load_profile("fastest")


def test_build_refuses_to_start_without_api_key(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="OCR_SIDECAR_API_KEY"):
        build_app({})


def test_build_refuses_a_model_of_the_wrong_kind(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    with pytest.raises(BuildError, match="this deployment runs ocr engines"):
        build_app(AppArgs(ocr_model="all-minilm-l6-v2"))


def test_args_reject_unknown_keys() -> None:
    with pytest.raises(ValueError, match="ocr_engine"):
        AppArgs.model_validate({"ocr_engine": "rapidocr"})


def test_kraken_recognition_without_segmentation_is_refused(
        clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    with pytest.raises(BuildError, match="needs a segmentation_model"):
        build_app(AppArgs(ocr_engines=["kraken-rec"], segmentation_model=None))


def _replica_env(app: Any, deployment: str) -> dict[str, str]:
    """The environment the builder gives a model deployment's processes."""
    handles = app._bound_deployment.init_args[2]
    bound = getattr(handles, deployment.lower())._bound_deployment
    return dict(bound.ray_actor_options["runtime_env"]["env_vars"])


def test_each_model_deployment_starts_with_the_environment_it_needs(
        clean_env: pytest.MonkeyPatch) -> None:
    """Segmentation's processes keep glibc from hoarding page arrays (flat memory); the
    Embedding's must not get that (every forward would fault its activations in, a third
    slower); a deployment's own options still override."""
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    app = build_app(local_default_args())
    segmentation, embedding = _replica_env(app, "Segmentation"), _replica_env(app, "Embedding")
    assert segmentation["MALLOC_MMAP_THRESHOLD_"] == str(4 * 2**20)
    assert "MALLOC_MMAP_THRESHOLD_" not in embedding
    assert segmentation["HF_HUB_OFFLINE"] == embedding["HF_HUB_OFFLINE"] == "1"
    assert embedding["OMP_NUM_THREADS"] == "2"  # config/local.yaml's, merged in

    overridden = local_default_args()
    overridden["deployment_options"]["Segmentation"]["ray_actor_options"]["runtime_env"][
        "env_vars"]["MALLOC_MMAP_THRESHOLD_"] = "0"
    assert _replica_env(build_app(overridden), "Segmentation")["MALLOC_MMAP_THRESHOLD_"] == "0"


def test_the_embedding_similarity_rerank_runs_in_the_ingress_without_a_replica(
        clean_env: pytest.MonkeyPatch, tiny_models: dict[str, str]) -> None:
    """The embedded default ranks by similarity: no Rerank replica is bound, the Ingress is
    told to rank itself and names the model; a cross-encoder gets its Rerank deployment."""
    clean_env.setenv("OCR_SIDECAR_API_KEY", "k")
    ingress_args = build_app(local_default_args())._bound_deployment.init_args
    models, handles, similarity = ingress_args[1], ingress_args[2], ingress_args[5]
    assert handles.rerank is None and similarity == "embedding-similarity"
    assert "Rerank" not in models  # the deployments' models: it has none

    crossed = build_app({**local_default_args(), "rerank_model": "tiny-rr", "models": {
        "tiny-rr": {"kind": "rerank", "engine": "flag-reranker", "footprint_mb": 1,
                    "path": tiny_models["reranker"]}}})._bound_deployment.init_args
    assert crossed[2].rerank is not None and crossed[5] is None
