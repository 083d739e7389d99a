"""The shipped serve configs are valid Serve configs whose args the builder accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deployments.models import load_catalog
from serve_app.app import AppArgs

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["config/local.yaml", "serve_config.yaml"])
def test_config_is_a_valid_serve_config(name: str) -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / name).read_text()))
    [application] = config.applications
    assert application.import_path == "serve_app.app:build_app"
    args = AppArgs.model_validate(application.args)
    catalog = load_catalog()
    for model in (args.ocr_model, args.segmentation_model, args.embedding_model,
                  args.rerank_model):
        assert model in catalog


def test_local_config_listens_on_loopback_only() -> None:
    config = yaml.safe_load((ROOT / "config/local.yaml").read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    assert config["http_options"]["port"] == 8000
