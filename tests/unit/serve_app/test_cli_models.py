"""`ocr-graph models list` and `pull` from an operator's shell, without a service."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_models_list_shows_what_is_missing_and_what_the_config_deploys(
        clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--config", str(ROOT / "serve_config.yaml")]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "MISSING" in rows["bge-m3"] and "Embedding*" in rows["bge-m3"]
    assert "yes" in rows["all-minilm-l6-v2"] and "package" in rows["all-minilm-l6-v2"]
    assert "Embedding*" not in rows["all-minilm-l6-v2"]  # not in serve_config.yaml


def test_models_pull_names_what_it_cannot_do(clean_env: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "no-such-model"]) == 2
    assert "not in config/models.yaml: no-such-model" in capsys.readouterr().err
    assert main(["models", "pull", "bge-m3"]) == 1  # no pinned source in the catalog
    assert "no source" in capsys.readouterr().err
