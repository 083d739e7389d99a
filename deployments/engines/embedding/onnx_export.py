"""An embedding encoder's ONNX export on disk: where it lives, and loading it without torch.

The export is written once per model files and library versions under MODEL_CACHE_DIR/onnx
(onnx_encoder.py writes it), with the tokenizer as the model's own loaded it (its Rust
backend, tokenizer.json) and what packing needs of the model's config (engine.json). A
later start of a dense model loads that folder alone (`cached_export`): neither torch nor
FlagEmbedding nor transformers is imported (exported.py runs it). The install exports the
models it bundles the same way, under INSTALLED_MODEL_CACHE_DIR/onnx, which a start looks
in after MODEL_CACHE_DIR: then even a first start loads only the export.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve_app.kernel.settings import Settings

logger = logging.getLogger(__name__)

# Part of the cache key: raise it when what an export folder holds changes.
EXPORT_FORMAT = 2
INPUTS = ("input_ids", "attention_mask", "position_ids", "token_type_ids")
MODEL_FILE = "encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
ENGINE_FILE = "engine.json"


@dataclass(frozen=True)
class EncoderConfig:
    """What packing reads of an encoder's config, kept in ENGINE_FILE."""

    model_type: str
    pad_token_id: int | None


@dataclass(frozen=True)
class CachedExport:
    """An earlier start's export, loaded: the session, what packing reads of the model's
    config, the tokenizer (a `tokenizers` Tokenizer) and the id it pads with."""

    session: Any
    config: EncoderConfig
    tokenizer: Any
    pad_id: int


KEY_LENGTH = 24  # hex digits of the cache key in an export folder's name


def cache_key(weights: Path, model: str) -> str:
    """What the export depends on: the model's files (names, sizes, times: its config and
    tokenizer among them), the exporting libraries' versions and the export's own format.
    Computed without loading the model, so a start can find the export first."""
    digest = hashlib.sha256(f"{EXPORT_FORMAT}|{model}".encode())
    for package in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        digest.update(f"|{package}={importlib.metadata.version(package)}".encode())
    files = [weights] if weights.is_file() else sorted(p for p in weights.rglob("*")
                                                       if p.is_file())
    for path in files:
        stat = path.stat()
        digest.update(f"|{path.relative_to(weights.parent)}:{stat.st_size}:"
                      f"{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:KEY_LENGTH]


def export_folder(cache_dir: Path, model: str, weights: Path) -> Path:
    return cache_dir / "onnx" / f"{model}-{cache_key(weights, model)}"


def other_exports(folder: Path) -> list[Path]:
    """The exports of the same model beside `folder` (an `export_folder`) made for other
    files or library versions: another model's, whose name may begin alike, are not."""
    model = folder.name[:-KEY_LENGTH - 1]
    name = re.compile(rf"{re.escape(model)}-[0-9a-f]{{{KEY_LENGTH}}}")
    return [old for old in folder.parent.iterdir()
            if old != folder and name.fullmatch(old.name)]


def session_threads() -> int:
    """The session's threads as torch would have them: OMP_NUM_THREADS where it is set (the
    serve configs set it), else 0, ONNX Runtime's own default of one a physical core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


def session(path: Path) -> Any:
    """An ONNX Runtime session on `session_threads()` threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = session_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings about unused initializers say nothing
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_roots(settings: Settings) -> tuple[Path, Path]:
    """Where a start looks for an export, in order: MODEL_CACHE_DIR (what this site
    exported), then INSTALLED_MODEL_CACHE_DIR (what the install built)."""
    assert settings.model_cache_dir is not None
    return settings.model_cache_dir, settings.installed_model_cache_dir


def find_export(model: str, weights: Path, roots: Sequence[Path]) -> Path | None:
    """The first whole export of `model` as its files are now under one of `roots` (a
    model cache: the export lies in its onnx folder), or None."""
    for root in roots:
        folder = export_folder(root, model, weights)
        if all((folder / name).is_file() for name in (MODEL_FILE, TOKENIZER_FILE, ENGINE_FILE)):
            return folder
    return None


def cached_export(model: str, weights: Path, roots: Sequence[Path]) -> CachedExport | None:
    """An earlier export of `model` with its tokenizer (`find_export`), loaded without the
    model's own code; None where there is none whole, or where it does not load (then
    removed where it can be: the model's own load exports it again)."""
    folder = find_export(model, weights, roots)
    if folder is None:
        return None
    try:
        from tokenizers import Tokenizer

        engine = json.loads((folder / ENGINE_FILE).read_text(encoding="utf-8"))
        config = EncoderConfig(engine["model_type"], engine["pad_token_id"])
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # The model's own tokenizer is called with truncation and padding off (flag.py).
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return CachedExport(session(folder / MODEL_FILE), config, tokenizer,
                            int(engine["tokenizer_pad_id"]))
    except Exception as error:  # damaged on disk: removed, so the model's load makes it again
        logger.warning("the cached ONNX export %s does not load (%s: %s); loading the model "
                       "through FlagEmbedding, which exports it again", folder,
                       type(error).__name__, error)
        shutil.rmtree(folder, ignore_errors=True)
        return None
