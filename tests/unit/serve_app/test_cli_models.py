"""`ocr-graph models list` and `pull` from an operator's shell, without a service."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.cli import main
from tests.fixtures.fresh_python import MINILM_START, fresh_python

ROOT = Path(__file__).resolve().parents[3]


def test_models_list_shows_what_is_missing_and_what_the_config_deploys(
        clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--config", str(ROOT / "serve_config.yaml")]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "MISSING" in rows["bge-m3"] and "Embedding*" in rows["bge-m3"]
    assert "yes" in rows["all-minilm-l6-v2"] and "package" in rows["all-minilm-l6-v2"]
    assert "Embedding*" not in rows["all-minilm-l6-v2"]  # not in serve_config.yaml
    assert rows["embedding-similarity"].split()[1] == "Ingress"  # no replica of its own
    assert rows["bge-reranker-v2-m3"].split()[1] == "Rerank*"


def test_models_pull_names_what_it_cannot_do(clean_env: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "no-such-model"]) == 2
    assert "not in config/models.yaml: no-such-model" in capsys.readouterr().err
    assert main(["models", "pull", "bge-m3"]) == 1  # no pinned source in the catalog
    assert "no source" in capsys.readouterr().err


def test_models_export_installed_gives_a_first_start_what_a_restart_loads(
        clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """What `make setup` and the image's build run: a start on an empty DATA_DIR then
    loads the bundled model's export alone (no torch), and writes no export of its own."""
    installed = tmp_path / "installed" / "onnx"
    stale = installed / ("all-minilm-l6-v2-" + "0" * 24)  # an earlier install's
    other = installed / ("all-minilm-l6-v2-tuned-" + "0" * 24)  # another model's
    for folder in (stale, other):
        folder.mkdir(parents=True)
    assert main(["models", "export", "--installed"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    name, folder = line.split(": ")
    assert name == "all-minilm-l6-v2" and Path(folder).parent == installed
    assert sorted(installed.iterdir()) == sorted([Path(folder), other])
    first = tmp_path / "first-start"
    code = MINILM_START + "print((Settings.load().model_cache_dir / 'onnx').exists())\n"
    out = fresh_python(code, OCR_SIDECAR_API_KEY="k", DATA_DIR=str(first)).splitlines()
    assert out[0].split() == ["onnxruntime", "[]"]
    assert out[1] == "False"  # nothing exported into MODEL_CACHE_DIR


def test_models_export_names_what_it_cannot_do(clean_env: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "export", "rapidocr"]) == 2
    assert "not embedding models of config/models.yaml: rapidocr" in capsys.readouterr().err
    assert main(["models", "export", "--installed", "bge-m3"]) == 2  # pulled, not bundled
    assert "not bundled embedding models" in capsys.readouterr().err
    assert main(["models", "export", "bge-m3"]) == 1  # not pulled yet
    assert "ocr-graph: bge-m3: model 'bge-m3' is not at" in capsys.readouterr().err
    clean_env.setenv("EMBED_CPU_RUNTIME", "torch")
    assert main(["models", "export"]) == 2
    assert "EMBED_CPU_RUNTIME is torch" in capsys.readouterr().err
