"""One registry per capability says which engines exist; the HTTP schema and the catalog
agree with it."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from deployments.engines.embedding import ENGINES as EMBEDDING
from deployments.engines.ocr import ENGINES as OCR
from deployments.engines.ocr import ocr_engines
from deployments.engines.rerank import ENGINES as RERANK
from deployments.engines.segmentation import ENGINES as SEGMENTATION
from deployments.models import load_catalog
from serve_app.schemas import Engine

ENGINE_REGISTRIES: dict[str, dict[str, Any]] = {"ocr": OCR, "segmentation": SEGMENTATION,
                                                "embedding": EMBEDDING, "rerank": RERANK}


def test_the_schema_offers_exactly_the_registered_ocr_engines() -> None:
    assert set(get_args(Engine)) == {"auto", *OCR}


@pytest.mark.parametrize("kind", sorted(ENGINE_REGISTRIES))
def test_a_registry_keys_its_engines_by_their_name(kind: str) -> None:
    registry = ENGINE_REGISTRIES[kind]
    assert registry
    assert {name: cls.name for name, cls in registry.items()} == {n: n for n in registry}


def test_every_catalog_entry_names_an_engine_of_its_kind() -> None:
    """Every engine the builder accepts, by kind (the rerank's include the Ingress's own
    embedding-similarity, ADR 015)."""
    from serve_app.app import DEPLOYMENTS

    accepted = {kind: set(engines) for kind, engines in DEPLOYMENTS.values()}
    catalog = load_catalog()
    unknown = {name: (spec.kind, spec.engine) for name, spec in catalog.items()
               if spec.engine not in accepted[spec.kind]}
    assert len(catalog) >= 8 and unknown == {}
    assert accepted["rerank"] - set(RERANK) == {"embedding-similarity"}


def test_deployed_ocr_engines_know_which_read_baselines() -> None:
    catalog = load_catalog()
    deployed = ocr_engines([catalog["rapidocr"], catalog["archive-rec"], catalog["tesseract"]])
    assert deployed.names == ("rapidocr", "kraken", "tesseract")
    assert deployed.baseline_readers == frozenset({"kraken"})
    assert deployed.reads_baselines("kraken") and not deployed.reads_baselines("auto")
