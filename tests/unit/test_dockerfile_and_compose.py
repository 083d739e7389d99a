"""The Dockerfile and compose file agree with the Makefile and the settings.

No Docker engine runs in CI; these checks keep the container recipe from drifting away
from the install that CI does test."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from serve_app.kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _makefile_tesseract_packages() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"TESSERACT_PACKAGES := (.*?)\n\n", text, re.S)
    assert block, "Makefile lost TESSERACT_PACKAGES"
    return set(block.group(1).replace("\\", " ").split())


def test_image_installs_what_make_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    words = set(dockerfile.replace("\\", " ").split())
    assert _makefile_tesseract_packages() <= words
    assert "-c constraints.txt" in dockerfile  # the same pinned versions as CI
    assert "serve_config.yaml" in dockerfile


def test_compose_wires_the_service_to_ollama_with_a_required_key() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["ocr-graph"]
    env = service["environment"]
    assert env["OLLAMA_URL"] == "http://ollama:11434" and "ollama" in compose["services"]
    assert ":?" in env["OCR_SIDECAR_API_KEY"]  # compose refuses to start without one
    known = {field.alias or name for name, field in Settings.model_fields.items()}
    assert set(env) <= known | {name.upper() for name in Settings.model_fields}
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
