"""Base models to fine-tune from: a trained model's active version, or kraken's blla.

blla reads pages scaled to 1800 px height, which a CPU or a small GPU share trains only
very slowly. A segmentation base taller than SEGTRAIN_MAX_HEIGHT is copied once at that
height (the network is convolutional and recurrent over the page: its weights apply at any
height) into STATE_DIR/models/.bases/, and every later run starts from that copy; the
models it trains keep the smaller height, so later runs on them need no copy at all.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

from deployments.trained_models import TrainedModels
from serve_app.kernel.errors import InvalidInput

logger = logging.getLogger("ray.serve")

BUNDLED_BLLA = "blla"  # base_model name of kraken's own segmentation model


def bundled_blla() -> Path:
    import kraken

    return Path(next(iter(kraken.__path__))) / "blla.mlmodel"


def resolve_base(kind: str, base_model: str | None, models: TrainedModels) -> Path | None:
    """The file a run starts from; 422 when the named model has no active version."""
    if base_model is None:
        return None
    if kind == "segtrain" and base_model == BUNDLED_BLLA:
        return bundled_blla()
    active = models.active(base_model)
    if active is None:
        raise InvalidInput(f"base_model {base_model!r} has no active version: train and "
                           f"activate one first, or leave base_model out"
                           + (" (or use 'blla')" if kind == "segtrain" else ""),
                           {"field": "options.base_model"})
    if active.kind not in (None, kind):
        raise InvalidInput(f"base_model {base_model!r} is a {active.kind} model; a {kind} "
                           "job needs one of its own kind", {"field": "options.base_model"})
    return active.path


def input_height(path: Path) -> int:
    """The page height a segmentation model scales its input to."""
    from kraken.models import load_models

    [model, *_] = load_models(path, tasks=["segmentation"])
    return int(model.input[2])


def at_most(path: Path, height: int, cache: Path) -> Path:
    """`path`, or a copy of it that reads pages at `height` px when it reads taller ones."""
    if height <= 0 or input_height(path) <= height:
        return path
    target = cache / f"{path.stem}-{height}px.safetensors"
    if target.is_file():
        return target
    from kraken.models import load_models
    from kraken.models.writers import write_safetensors

    [model, *_] = load_models(path, tasks=["segmentation"])
    old = int(model.input[2])
    pattern = re.compile(rf"^\[(\d+),{old},")
    model.spec = pattern.sub(rf"[\g<1>,{height},", model.spec)
    model.user_metadata["vgsl"] = pattern.sub(rf"[\g<1>,{height},",
                                              model.user_metadata["vgsl"])
    model.input = (model.input[0], model.input[1], height, model.input[3])
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".copy-") as staging:
        written = Path(write_safetensors([model], Path(staging) / target.name))
        written.replace(target)
    logger.info("segmentation base %s copied at %d px (was %d px): %s", path.name, height, old,
                target)
    return target
