"""The container recipe: the Dockerfile lints clean and installs what CI tests, the
compose files follow the Compose Specification and run the service hardened, the
entrypoint refuses unwritable dirs in one line, and both state layouts keep every
writable path under STATE_DIR.

No Docker engine runs in CI; these checks keep the recipe from drifting from the
install that CI does test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator

from serve_app.cli import key_file
from serve_app.front_door import NODE_ENV
from serve_app.kernel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "fixtures" / "compose" / "compose_spec.json"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: `!override` and `!reset` mark how an overlay merges."""


ComposeLoader.add_constructor("!override", lambda loader, node: Override(
    loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node)))


class Override(list):  # type: ignore[type-arg]
    """A value that replaces the base file's instead of merging with it."""


def compose(name: str) -> dict[str, Any]:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)


def mount(entry: str) -> tuple[str, str, str]:
    """(source, target, mode) of a short-syntax volume; the source may be ${VAR:-default}."""
    found = re.fullmatch(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::(\w+))?", entry)
    assert found, entry
    return found.group(1), found.group(2), found.group(3) or "rw"


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of a service: mappings merged, `!override` replacing, volumes
    merged by their container path."""
    result = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Override):
            result[key] = list(value)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            result[key] = {**base[key], **value}
        elif key == "volumes" and key in base:
            targets = {mount(entry)[1]: entry for entry in [*base[key], *value]}
            result[key] = list(targets.values())
        else:
            result[key] = value
    return result


def _makefile_tesseract_packages() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"TESSERACT_PACKAGES := (.*?)\n\n", text, re.S)
    assert block, "Makefile lost TESSERACT_PACKAGES"
    return set(block.group(1).replace("\\", " ").split())


def test_image_installs_what_make_installs_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    words = set(dockerfile.replace("\\", " ").split())
    assert _makefile_tesseract_packages() <= words
    assert "-c constraints.txt -e ." in dockerfile  # the README's install, pinned as CI's
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+$", dockerfile, re.M)  # a patch pin
    assert re.search(r"^USER 1000:1000$", dockerfile, re.M)
    start = re.search(r"--start-period=(\d+)s", dockerfile)
    assert start and int(start.group(1)) >= 300  # time for a cold model pull
    assert "/readyz" in dockerfile
    assert 'ENTRYPOINT ["/usr/local/bin/ocr-graph-entrypoint"]' in dockerfile
    assert "COPY deploy/entrypoint.sh /usr/local/bin/ocr-graph-entrypoint" in dockerfile


def test_every_package_the_image_copies_is_compiled_after_the_copy() -> None:
    """The container's root filesystem is read-only: a package without bytecode from the
    build is compiled again by every process that imports it, at every start."""
    import tomllib

    dockerfile = (ROOT / "Dockerfile").read_text()
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    packages = sorted(pattern.rstrip("*") for pattern in found)  # what `pip install` maps
    assert packages
    assert all(f"COPY {name} {name}" in dockerfile for name in packages)
    last_copy = max(dockerfile.index(f"COPY {name} {name}") for name in packages)
    compiled = re.search(r"^RUN python -m compileall -q (.+)$", dockerfile[last_copy:], re.M)
    assert compiled and set(compiled.group(1).split()) >= set(packages)


def test_the_image_exports_its_bundled_models_as_make_setup_does() -> None:
    """Built as root after the code and the catalog are in place, so a container's first
    start finds the export: exported after USER, it could not write the install's folder;
    before the COPY of the code or the catalog, the command would not exist or find nothing."""
    command = "ocr-graph models export --installed"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^\t\$\(VENV\)/bin/{command}$", makefile, re.M)
    dockerfile = (ROOT / "Dockerfile").read_text()
    run = dockerfile.index(f"RUN {command}")
    assert max(dockerfile.index(f"COPY {name} {name}")
               for name in ("serve_app", "deployments", "config")) < run
    assert run < dockerfile.index("USER 1000:1000")


def test_the_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"),
                           str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.flat-mount.yml"])
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    validator = Draft201909Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{list(error.absolute_path)}: {error.message}"
              for error in validator.iter_errors(json.loads(json.dumps(compose(name))))]
    assert not errors


def test_a_compose_file_the_spec_refuses_is_caught() -> None:
    broken = compose("docker-compose.yml")
    broken["services"]["ocr-graph"]["read_only"] = "yes please"
    validator = Draft201909Validator(json.loads(SCHEMA.read_text()))
    assert not validator.is_valid(json.loads(json.dumps(broken)))


def test_compose_runs_the_service_hardened_beside_ollama() -> None:
    spec = compose("docker-compose.yml")
    service = spec["services"]["ocr-graph"]
    env = service["environment"]
    assert env["OLLAMA_URL"] == "http://ollama:11434" and "ollama" in spec["services"]
    assert ":?" in env["OCR_SIDECAR_API_KEY"]  # compose refuses to start without one
    known = {field.alias or name for name, field in Settings.model_fields.items()}
    assert set(env) <= known
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert service["read_only"] is True and service["user"] == "1000:1000"
    assert "/tmp:size=512m" in service["tmpfs"]
    assert service["mem_limit"] == service["memswap_limit"]
    assert service["depends_on"]["volume-init"]["condition"] == (
        "service_completed_successfully")
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == [
        "gpu"]
    mounts = {mount(entry)[1]: mount(entry) for entry in service["volumes"]}
    assert mounts[env["OCR_SIDECAR_UPLOAD_BASE"]][2] == "ro"
    # Everything the service writes is a named volume, writable: models (pulls stage in
    # models/.tmp), state and Ray's cache; the uploads are only read.
    for target in ("/models", "/data/state", "/cache"):
        source, _, mode = mounts[target]
        assert mode == "rw" and source in spec["volumes"]
    init = spec["services"]["volume-init"]
    assert {mount(entry)[1] for entry in init["volumes"]} == {"/models", "/data/state",
                                                              "/cache"}
    assert "chown -R 1000:1000" in " ".join(init["command"])


def test_env_example_names_how_to_make_a_key_and_holds_no_usable_one() -> None:
    example = (ROOT / ".env.example").read_text()
    assert "openssl rand -hex 32" in example
    values = dict(line.split("=", 1) for line in example.splitlines()
                  if line and not line.startswith("#"))
    assert values["OCR_SIDECAR_API_KEY"] == "" and values["OCR_TRAINING_TOKEN"] == ""
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    assert set(values) <= used  # no setting that compose would not pass on
    assert {"OCR_SIDECAR_API_KEY", "UPLOADS_DIR"} <= set(values)


def state_paths(settings: Settings) -> list[Path]:
    """Every writable path of the service's state."""
    return [key_file(settings), settings.training_dir / "jobs.db",
            settings.training_dir / "datasets", settings.trained_models_dir]


def test_nested_and_flat_layouts_keep_every_state_path_on_the_state_mount(
        clean_env: pytest.MonkeyPatch) -> None:
    base = compose("docker-compose.yml")
    overlay = compose("docker-compose.flat-mount.yml")
    dockerfile_env = dict(re.findall(r"^\s+(\w+)=(\S+)", (ROOT / "Dockerfile").read_text(),
                                     re.M))
    for layout, service in (
            ("nested", base["services"]["ocr-graph"]),
            ("flat", merged(base["services"]["ocr-graph"], overlay["services"]["ocr-graph"]))):
        env = {**dockerfile_env, **{k: v for k, v in service["environment"].items()
                                    if not str(v).startswith("${")}}
        settings = Settings(OCR_SIDECAR_API_KEY="k", **env)
        mounts = {mount(entry)[1]: mount(entry)[0] for entry in service["volumes"]}
        state_mount = {"nested": "/data/state", "flat": "/data-state"}[layout]
        assert mounts[state_mount] == "state", layout
        assert settings.state_dir == Path(state_mount), layout
        for path in state_paths(settings):
            assert path.is_relative_to(state_mount), (layout, path)
    flat_init = merged(base["services"]["volume-init"], overlay["services"]["volume-init"])
    assert "state:/data-state" in flat_init["volumes"]
    assert "state:/data/state" not in flat_init["volumes"]


def run_entrypoint(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The entrypoint with stand-ins for `ray` and `ocr-graph` that record their args."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("ray", "ocr-graph"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls"\n'
                        "".join(f'echo "{name}=${name}" >> "{tmp_path}/env"\n'
                                for name in NODE_ENV))
        stub.chmod(0o755)
    return subprocess.run(["bash", str(ENTRYPOINT)], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}", **env})


def test_the_entrypoint_cleans_old_staging_then_starts_ray_and_the_app(tmp_path: Path) -> None:
    dirs = {"STATE_DIR": tmp_path / "state", "MODEL_CACHE_DIR": tmp_path / "models",
            "TMPDIR": tmp_path / "models" / ".tmp", "RAY_TMPDIR": tmp_path / "ray"}
    dirs["TMPDIR"].mkdir(parents=True)
    old, fresh = dirs["TMPDIR"] / "bge-m3.partial", dirs["TMPDIR"] / "reranker.partial"
    old.mkdir()
    fresh.write_bytes(b"half a model")
    two_days_ago = old.stat().st_mtime - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    done = run_entrypoint(tmp_path, {name: str(path) for name, path in dirs.items()})
    assert done.returncode == 0, done.stderr
    assert not old.exists() and fresh.exists()
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0].startswith("ray start --head") and f"--temp-dir={dirs['RAY_TMPDIR']}" in (
        calls[0])
    assert calls[1] == "ocr-graph serve serve_config.yaml"
    # Ray is started with HAProxy and the proxy's front door in its environment.
    started_with = (tmp_path / "env").read_text().splitlines()[:len(NODE_ENV)]
    assert started_with == [f"{name}={value}" for name, value in NODE_ENV.items()]


def test_the_entrypoint_refuses_an_unwritable_state_dir_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    done = run_entrypoint(tmp_path, {"STATE_DIR": str(blocker / "state"),
                                     "MODEL_CACHE_DIR": str(tmp_path / "models"),
                                     "RAY_TMPDIR": str(tmp_path / "ray")})
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert str(blocker / "state") in line and "not writable" in line
    assert not (tmp_path / "calls").exists()  # nothing started
