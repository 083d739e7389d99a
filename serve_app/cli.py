"""The `ocr-graph` command: start the service, OCR files through it, list its models.

    ocr-graph serve [CONFIG]       serve run CONFIG (default config/local.yaml) with an API key
    ocr-graph serve --simulate-gpu MB [CONFIG]
                                   the same on a simulated GPU of MB beside Ollama: rehearse
                                   a residency profile on a machine without a GPU
    ocr-graph key                  print the API key `serve` uses (for curl and scripts)
    ocr-graph ocr FILE|DIR ...     OCR files through a running service, with a progress bar
    ocr-graph models list [--config CONFIG]
                                   every catalog model: source, present, size, deployment
    ocr-graph models pull NAME ... fetch missing models into MODEL_CACHE_DIR, with progress
    ocr-graph models export [NAME ...] [--installed]
                                   export embedding encoders to ONNX Runtime ahead of the
                                   first start (--installed: the bundled ones, beside the
                                   install; make setup and the image's build run it)
    ocr-graph models deployed      what each deployment of a running service serves, where

This module is an entry point: like serve_app/app.py it may import the deployments (the
model catalog and store).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from tqdm import tqdm

from serve_app.front_door import NODE_ENV
from serve_app.kernel.settings import Settings

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "local.yaml"
DOCUMENT_SUFFIXES = {".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp"}


def key_file(settings: Settings) -> Path:
    assert settings.state_dir is not None
    return settings.state_dir / "api_key"


def api_key(settings: Settings, create: bool) -> str | None:
    """OCR_SIDECAR_API_KEY, else the key file in STATE_DIR (made on first use if asked)."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    path = key_file(settings)
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    print(f"ocr-graph: generated an API key in {path} (show it with `ocr-graph key`)",
          file=sys.stderr)
    return path.read_text(encoding="utf-8").strip()


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings()
    # HAProxy in front and the proxy's front door are read from Ray's environment.
    env = {**NODE_ENV, **os.environ}
    if settings.auth_mode == "api-key":
        key = api_key(settings, create=True)
        assert key is not None
        env["OCR_SIDECAR_API_KEY"] = key
    if args.simulate_gpu:
        return serve_simulated(args.config, args.simulate_gpu, env)
    serve = shutil.which("serve", path=str(Path(sys.executable).parent)) or shutil.which("serve")
    if serve is None:
        print("ocr-graph: the `serve` command of Ray is not installed (pip install ray[serve])",
              file=sys.stderr)
        return 2
    os.execve(serve, [serve, "run", str(args.config)], env)
    return 0  # pragma: no cover - execve does not return


SIMULATED_PROFILE = "llm-first"


def simulated_env(env: dict[str, str], total_mb: int) -> dict[str, str]:
    """The settings of a rehearsal: a fake GPU of total_mb whose LLM share Ollama's /api/ps
    reports (OLLAMA_URL), the llm-first profile unless RESIDENCY_PROFILE says otherwise."""
    return {**env, "VRAM_FAKE_TOTAL_MB": str(total_mb),
            "RESIDENCY_PROFILE": env.get("RESIDENCY_PROFILE", SIMULATED_PROFILE),
            "RAY_AUTH_MODE": env.get("RAY_AUTH_MODE", "disabled")}


def serve_simulated(config: Path, total_mb: int, env: dict[str, str]) -> int:
    """Serve CONFIG's applications in this process on a Ray of its own with one logical
    GPU of total_mb, until Ctrl-C (or SIGTERM); then stop what was started."""
    import signal
    import tempfile
    import threading

    import ray
    import yaml
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from serve_app.app import build_app

    os.environ.update(simulated_env(env, total_mb))
    schema = ServeDeploySchema.model_validate(yaml.safe_load(config.read_text()))
    work = Path(tempfile.mkdtemp(prefix="ocrg-simulated-"))
    ray.init(num_gpus=1, _temp_dir=str(work / "ray"), include_dashboard=False)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    try:
        serve.start(http_options=schema.http_options.model_dump(exclude_unset=True),
                    logging_config=schema.logging_config)
        for app in schema.applications:
            serve.run(build_app({**(app.args or {}), "gpu_total_mb": total_mb}),
                      name=app.name, route_prefix=app.route_prefix)
        print(f"ocr-graph: serving on a simulated {total_mb} MB GPU (profile "
              f"{os.environ['RESIDENCY_PROFILE']}, LLM share from {Settings().ollama_url}"
              "/api/ps); Ctrl-C stops", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    key = api_key(Settings(), create=False)
    if key is None:
        print("ocr-graph: no API key yet: set OCR_SIDECAR_API_KEY or run `ocr-graph serve`",
              file=sys.stderr)
        return 1
    print(key)
    return 0


def _client(args: argparse.Namespace) -> httpx.Client:
    key = args.key or api_key(Settings(), create=False) or ""
    return httpx.Client(base_url=args.url, headers={"X-API-Key": key}, timeout=args.timeout)


def _documents(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(
                p for p in path.rglob("*") if p.suffix.lower() in DOCUMENT_SUFFIXES))
        else:
            found.append(path)
    return found


def cmd_ocr(args: argparse.Namespace) -> int:
    files = _documents(args.paths)
    if not files:
        print("ocr-graph: no documents found", file=sys.stderr)
        return 1
    out_dir: Path | None = args.out
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    options = json.dumps({"formats": ["json", "text", *args.format], "pages": args.pages,
                          "dpi": args.dpi, "engine": args.engine})
    failures = 0
    with _client(args) as client, tqdm(files, unit="doc", desc="OCR") as progress:
        for path in progress:
            progress.set_postfix_str(path.name)
            with path.open("rb") as handle:
                response = client.post("/v1/ocr/upload", files={"file": (path.name, handle)},
                                       data={"options": options})
            if response.status_code != 200:
                failures += 1
                message = response.json().get("error", {}).get("message", response.text)
                tqdm.write(f"{path}: {response.status_code} {message}", file=sys.stderr)
                continue
            body = response.json()
            if out_dir:
                for name, text in _outputs(path.stem, body).items():
                    _write_whole(out_dir / name, text)
            else:
                tqdm.write(body["text"])
    return 1 if failures else 0


def _outputs(stem: str, body: dict[str, Any]) -> dict[str, str]:
    """File name -> content for one document: text, JSON, and the XML formats asked for."""
    documents = {"alto": body.get("alto"), "hocr": body.get("hocr")}
    outputs = {f"{stem}.txt": body["text"],
               f"{stem}.json": json.dumps({k: v for k, v in body.items()
                                           if k not in ("alto", "hocr", "page_xml")},
                                          ensure_ascii=False)}
    if documents["alto"] is not None:
        outputs[f"{stem}.alto.xml"] = documents["alto"]
    if documents["hocr"] is not None:
        outputs[f"{stem}.hocr"] = documents["hocr"]
    for page, page_xml in zip(body["pages"], body.get("page_xml") or [], strict=False):
        outputs[f"{stem}.page-{page['page']}.xml"] = page_xml
    return outputs


def _write_whole(path: Path, text: str) -> None:
    """Write beside the target, then rename: an interrupted run leaves no half file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _source(spec: Any) -> str:
    from deployments.models import HubSource
    from serve_app.similarity import SIMILARITY_ENGINE

    if spec.source is None:
        elsewhere = {"llm": "in Ollama (OLLAMA_URL)", "tesseract": "make system-deps",
                     "ensemble": "tesseract and rapidocr", SIMILARITY_ENGINE:
                     "no weights: the Embedding's"}
        return f"package {spec.package}" if spec.package else (
            f"trained here ({spec.trained})" if spec.trained else
            "copied by hand" if spec.path else
            elsewhere.get(spec.engine, "bundled with its engine"))
    if isinstance(spec.source, HubSource):
        return f"hf {spec.source.hf}@{spec.source.revision[:8]}"
    return f"url {spec.source.url}"


def cmd_models_list(args: argparse.Namespace) -> int:
    """The catalog as the store sees it, without a running service."""
    from deployments.model_store import size_of
    from deployments.models import load_catalog, resolve_weights
    from serve_app.app import DEPLOYMENTS
    from serve_app.kernel.errors import ModelMissing
    from serve_app.similarity import SIMILARITY_ENGINE

    deployment_of_kind = {kind: name for name, (kind, _) in DEPLOYMENTS.items()}
    settings = Settings()
    used = set()
    if args.config:
        app_args = (yaml.safe_load(args.config.read_text()) or {})["applications"][0]["args"]
        used = {app_args.get(key) for key in ("ocr_model", "segmentation_model",
                                              "embedding_model", "rerank_model",
                                              "training_model")} | set(
            app_args.get("ocr_engines") or [])
    print(f"{'model':<22} {'deployment':<13} {'present':<8} {'size MB':>8}  source")
    for name, spec in load_catalog().items():
        try:
            path = resolve_weights(spec, settings)
            present, size = "yes", f"{size_of(path) / 2**20:.0f}" if path else "-"
        except ModelMissing:
            present, size = "MISSING", "-"
        deployment = ("Ingress" if spec.engine == SIMILARITY_ENGINE  # ADR 015
                      else deployment_of_kind[spec.kind]) + ("*" if name in used else "")
        print(f"{name:<22} {deployment:<13} {present:<8} {size:>8}  {_source(spec)}")
    if args.config:
        print(f"* deployed by {args.config}")
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    """Fetch the named models that are missing; one line per model, a bar per download."""
    from deployments.model_store import PullFailed, clean_staging, pull
    from deployments.models import load_catalog

    settings = Settings()
    catalog = load_catalog()
    unknown = [name for name in args.names if name not in catalog]
    if unknown:
        print(f"ocr-graph: not in config/models.yaml: {', '.join(unknown)}", file=sys.stderr)
        return 2
    clean_staging(settings)
    failed = 0
    for name in args.names:
        with tqdm(desc=name, unit="B", unit_scale=True, leave=False) as bar:
            def progress(done: int, total: int | None, bar: tqdm = bar) -> None:
                bar.total = total
                bar.update(done - bar.n)
            try:
                path = pull(catalog[name], settings, progress)
            except PullFailed as exc:
                print(f"ocr-graph: {name}: {exc}", file=sys.stderr)
                failed += 1
                continue
        print(f"{name}: {path}")
    return 1 if failed else 0


def cmd_models_export(args: argparse.Namespace) -> int:
    """Export embedding models' encoders as their first start on the CPU would (ADR 013),
    so every start loads the export alone. `--installed` exports the models the install
    bundles into INSTALLED_MODEL_CACHE_DIR, keeping one export per model there."""
    from deployments.engines.embedding import ENGINES
    from deployments.engines.embedding.onnx_export import (
        export_roots,
        find_export,
        other_exports,
    )
    from deployments.models import load_catalog, resolve_weights
    from serve_app.kernel.errors import ModelMissing

    settings = Settings()
    if settings.embed_cpu_runtime != "onnxruntime":
        print("ocr-graph: EMBED_CPU_RUNTIME is torch: the encoders do not run from an export",
              file=sys.stderr)
        return 2
    if args.installed:
        root = settings.installed_model_cache_dir
        settings = settings.model_copy(update={"model_cache_dir": root,
                                               "tmp_dir": root / ".tmp"})
    catalog = load_catalog()
    exportable = {name for name, spec in catalog.items()
                  if spec.kind == "embedding" and (spec.package or not args.installed)}
    refused = [name for name in args.names if name not in exportable]
    if refused:
        what = "bundled embedding models" if args.installed else "embedding models"
        print(f"ocr-graph: not {what} of config/models.yaml: {', '.join(refused)} "
              f"(these are: {', '.join(sorted(exportable))})", file=sys.stderr)
        return 2
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # as replicas load them
    failed = 0
    for name in tqdm(args.names or sorted(exportable), desc="exporting", unit="model"):
        spec = catalog[name]
        try:
            weights = resolve_weights(spec, settings)
        except ModelMissing as exc:
            if args.names:
                tqdm.write(f"ocr-graph: {name}: {exc}", file=sys.stderr)
                failed += 1
            else:
                tqdm.write(f"{name}: not present, skipped")
            continue
        assert weights is not None  # an embedding model always has files
        ENGINES[spec.engine](spec, settings, "cpu")  # exports where no export is found
        folder = find_export(name, weights, export_roots(settings))
        if folder is None:
            tqdm.write(f"ocr-graph: {name}: not exported, its encoder stays on torch (the "
                       "warning above says why)", file=sys.stderr)
            failed += 1
            continue
        tqdm.write(f"{name}: {folder}")
        if args.installed:  # earlier installs' exports of it: files or libraries since changed
            for old in other_exports(folder):
                shutil.rmtree(old, ignore_errors=True)
    if args.installed:
        with contextlib.suppress(OSError):  # the export's staging, empty once it is done
            (root / ".tmp").rmdir()
    return 1 if failed else 0


def cmd_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.get("/v1/models")
    if response.status_code != 200:
        print(f"ocr-graph: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    for model in response.json():
        print(f"{model['deployment']:<14} {model['model']:<24} {model['device']:<5} "
              f"gpu_share={model['gpu_share']}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="ocr-graph", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the service (serve run CONFIG)")
    serve.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    serve.add_argument("--simulate-gpu", type=int, metavar="MB",
                       help="rehearse on a simulated GPU of MB megabytes (one logical Ray "
                       "GPU, profile llm-first, the LLM's share from Ollama at OLLAMA_URL)")
    serve.set_defaults(func=cmd_serve)

    key = commands.add_parser("key", help="print the API key")
    key.set_defaults(func=cmd_key)

    models = commands.add_parser("models", help="the model store and the deployed models")
    store = models.add_subparsers(dest="models_command", required=True)
    listing = store.add_parser("list", help="every catalog model: source, present, size")
    listing.add_argument("--config", type=Path, help="mark the models this serve config "
                         "deploys")
    listing.set_defaults(func=cmd_models_list)
    pulling = store.add_parser("pull", help="fetch missing models into MODEL_CACHE_DIR")
    pulling.add_argument("names", nargs="+")
    pulling.set_defaults(func=cmd_models_pull)
    exporting = store.add_parser(
        "export", help="export embedding encoders to ONNX Runtime before their first start")
    exporting.add_argument("names", nargs="*", help="catalog names (default: every "
                           "embedding model present)")
    exporting.add_argument("--installed", action="store_true", help="the models the install "
                           "bundles, into INSTALLED_MODEL_CACHE_DIR (what make setup runs)")
    exporting.set_defaults(func=cmd_models_export)

    for name, parent, func, help_text in (
            ("ocr", commands, cmd_ocr, "OCR files or directories"),
            ("deployed", store, cmd_models, "what a running service's deployments serve")):
        sub = parent.add_parser(name, help=help_text)
        sub.add_argument("--url", default="http://127.0.0.1:8000")
        sub.add_argument("--key", help="API key (default: OCR_SIDECAR_API_KEY or the key file)")
        sub.add_argument("--timeout", type=float, default=600.0)
        sub.set_defaults(func=func)
        if name == "ocr":
            sub.add_argument("paths", nargs="+", type=Path)
            sub.add_argument("--out", type=Path, help="write NAME.txt, NAME.json and the "
                             "asked formats (NAME.alto.xml, NAME.page-N.xml, NAME.hocr) here")
            sub.add_argument("--pages", help="page selection, e.g. 1-3,7")
            sub.add_argument("--dpi", type=int, default=300)
            sub.add_argument("--engine", default="auto",
                             help="auto, rapidocr, tesseract, ensemble, surya, kraken or llm")
            sub.add_argument("--format", action="append", default=[],
                             choices=["alto", "page", "hocr"],
                             help="also write this format (repeatable)")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except httpx.HTTPError as exc:
        print(f"ocr-graph: cannot reach the service: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
