"""kraken 7's `ketos train` / `ketos segtrain`: the command line, and what its output says.

ketos (run without -v) prints one progress line per epoch once the epoch's validation has
run, e.g.

    stage 3/9 ━━━━━ 36/36 0:00:05 • 0:00:00 6.35it/s train_loss_step: 45.0 val_accuracy: 0.912 ...

and at the end which checkpoint was best and the weights file made from it:

    Converting best model /w/out/checkpoint_07-0.9412.ckpt (score: 0.9412) to weights file
        /w/out/best_0.9412.safetensors    (one line)

(segtrain says "to weights" without "file"). Checkpoints are named
`checkpoint_{epoch:02d}-{val_metric:.4f}.ckpt` (Lightning appends `-v1`, `-v2`, ... when a
name repeats; `checkpoint_abort.ckpt` is written when a run is interrupted). The metric
kraken selects the best model by is the character accuracy for recognition and the mean
IoU of the baseline map for segmentation; that is what a job reports as `accuracy`.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from serve_app.kernel.datasets import Dataset

Kind = Literal["train", "segtrain"]
# The progress-bar metric that equals kraken's val_metric for each kind.
METRIC = {"train": "val_accuracy", "segtrain": "val_mean_iu"}
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"
STAGE = re.compile(r"^\s*stage (?P<epoch>\d+)/(?:\d+|∞)(?=\s|$)")
BEST = re.compile(rf"Converting best model (?P<checkpoint>.+?) \(score: (?P<score>{_NUMBER})\) "
                  r"to weights(?: file)? (?P<weights>\S.*?)\s*$")
CHECKPOINT = re.compile(rf"^checkpoint_(?P<epoch>\d+)-(?P<metric>{_NUMBER})(?:-v\d+)?\.ckpt$")
MANIFEST = "manifest.txt"


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch: 1-based number and the selection metric, if it was a number."""

    epoch: int
    accuracy: float | None


@dataclass(frozen=True)
class BestModel:
    checkpoint: Path
    score: float | None
    weights: Path


def _number(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def parse_epoch(line: str, kind: Kind) -> EpochReport | None:
    """The epoch a progress line reports, with its metric; None for any other line."""
    match = STAGE.match(line)
    if not match:
        return None
    metric = re.search(rf"\b{METRIC[kind]}: ({_NUMBER})", line)
    return EpochReport(int(match["epoch"]) + 1, _number(metric.group(1)) if metric else None)


def parse_best(line: str) -> BestModel | None:
    """The best checkpoint and the weights file made from it, from ketos's last message."""
    match = BEST.search(line)
    if not match:
        return None
    return BestModel(Path(match["checkpoint"]), _number(match["score"]), Path(match["weights"]))


def checkpoint_score(name: str) -> tuple[int, float | None] | None:
    """(epoch, metric) of a checkpoint file name kraken writes; None for others
    (checkpoint_abort.ckpt, last.ckpt, weights)."""
    match = CHECKPOINT.match(name)
    if not match:
        return None
    return int(match["epoch"]), _number(match["metric"])


def best_checkpoint(folder: Path) -> Path | None:
    """The checkpoint with the highest metric (the later epoch on a tie), for a run that
    ended without saying which was best."""
    scored = []
    for path in folder.glob("checkpoint_*.ckpt"):
        parsed = checkpoint_score(path.name)
        if parsed and parsed[1] is not None:
            scored.append((parsed[1], parsed[0], path.stat().st_mtime, path))
    return max(scored)[3] if scored else None


def ketos_binary() -> str:
    """The ketos of this Python environment."""
    found = shutil.which("ketos", path=str(Path(sys.executable).parent)) or shutil.which("ketos")
    if found is None:
        raise FileNotFoundError("ketos is not installed (pip install kraken)")
    return found


def command(kind: Kind, dataset: Dataset, epochs: int, output: Path, device: str,
            threads: int, base: Path | None = None, resume: Path | None = None) -> list[str]:
    """The ketos command line of one run; it reads its files from `output/manifest.txt`
    (written by `write_manifest`), so no file list ever meets the argument limit.

    kraken 7: a loaded model brings its own network (`-s` is never given with `-i`), and
    `--resize union` adds the code points or line types the new data has; `--resume`
    restores everything from a checkpoint and takes no data options."""
    args = [ketos_binary(), "-d", device, "--workers", "0", "--threads", str(threads), kind]
    if resume is not None:
        return [*args, "--resume", str(resume), "-o", str(output)]
    args += ["-f", dataset.format if kind == "train" else "xml", "-q", "fixed",
             "-N", str(epochs), "-o", str(output), "-t", str(output / MANIFEST)]
    if base is not None:
        args += ["-i", str(base), "--resize", "union"]
    return args


def write_manifest(dataset: Dataset, output: Path) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    manifest = output / MANIFEST
    manifest.write_text("".join(f"{dataset.root / name}\n" for name in dataset.files),
                        encoding="utf-8")
    return manifest
