"""What ketos's output says, on the lines and file names kraken 7 really writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployments.training import ketos
from serve_app.kernel.datasets import Dataset

# Captured from kraken 7.1.1 `ketos train` and `ketos segtrain` runs (COLUMNS=512).
TRAIN_EPOCH = ("stage 0/1 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 36/36 0:00:00 • 0:00:00 "
               "60.24it/s train_loss_step: 43.847 val_accuracy: 0.912 val_word_accuracy: "
               "0.000 train_loss_epoch: 49.827")
SEG_EPOCH = ("stage 0/0 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 4/4 0:00:09 • 0:00:00 "
             "0.42it/s train_loss_step: 0.837 val_accuracy: 0.870 val_mean_acc: 0.870 "
             "val_mean_iu: 0.245 val_freq_iu: 0.397 val_bl_f1: 1.000 train_loss_epoch: 0.889")
TRAIN_BEST = ("Converting best model /tmp/kt/out2/checkpoint_00-0.0000.ckpt (score: 0.0000) "
              "to weights file /tmp/kt/out2/best_0.0000.safetensors")
SEG_BEST = ("Converting best model /tmp/kt/seg/checkpoint_00-0.2453.ckpt (score: 0.2453) to "
            "weights /tmp/kt/seg/best_0.2453.safetensors")


def test_epoch_lines_give_the_one_based_epoch_and_the_selection_metric() -> None:
    assert ketos.parse_epoch(TRAIN_EPOCH, "train") == ketos.EpochReport(1, 0.912)
    assert ketos.parse_epoch(SEG_EPOCH, "segtrain") == ketos.EpochReport(1, 0.245)
    early_stopping = TRAIN_EPOCH.replace("stage 0/1", "stage 12/∞")
    assert ketos.parse_epoch(early_stopping, "train") == ketos.EpochReport(13, 0.912)
    no_metric = "stage 3/9 ━━━━ 36/36 train_loss_step: 43.8"
    assert ketos.parse_epoch(no_metric, "train") == ketos.EpochReport(4, None)
    nan = TRAIN_EPOCH.replace("val_accuracy: 0.912", "val_accuracy: nan")
    assert ketos.parse_epoch(nan, "train") == ketos.EpochReport(1, None)
    for other in ("GPU available: False, used: False", "Total FLOPs: 33.7 M",
                  "   INFO  validation run: total chars 62.0 errors 62.0 accuracy 0.0", ""):
        assert ketos.parse_epoch(other, "train") is None


def test_the_best_model_message_of_both_commands() -> None:
    assert ketos.parse_best(TRAIN_BEST) == ketos.BestModel(
        Path("/tmp/kt/out2/checkpoint_00-0.0000.ckpt"), 0.0,
        Path("/tmp/kt/out2/best_0.0000.safetensors"))
    best = ketos.parse_best(SEG_BEST)
    assert best is not None and best.score == 0.2453
    assert best.weights == Path("/tmp/kt/seg/best_0.2453.safetensors")
    spaced = TRAIN_BEST.replace("/tmp/kt/out2", "/tmp/my runs/out")
    assert ketos.parse_best(spaced).checkpoint == Path(  # type: ignore[union-attr]
        "/tmp/my runs/out/checkpoint_00-0.0000.ckpt")
    assert ketos.parse_best("Converting nothing") is None


@pytest.mark.parametrize(("name", "parsed"), [
    ("checkpoint_00-0.0615.ckpt", (0, 0.0615)),
    ("checkpoint_07-0.9412-v1.ckpt", (7, 0.9412)),  # Lightning's suffix for a repeated name
    ("checkpoint_123-1.0000-v12.ckpt", (123, 1.0)),  # three-digit epochs
    ("checkpoint_02-nan.ckpt", (2, None)),  # a validation that produced no number
    ("checkpoint_abort.ckpt", None),  # written when a run is interrupted
    ("best_0.9412.safetensors", None),
    ("last.ckpt", None),
])
def test_checkpoint_names(name: str, parsed: tuple[int, float | None] | None) -> None:
    assert ketos.checkpoint_score(name) == parsed


def test_best_checkpoint_of_a_run_that_said_nothing(tmp_path: Path) -> None:
    names = ["checkpoint_00-0.5000.ckpt", "checkpoint_01-0.7000.ckpt",
             "checkpoint_02-0.7000-v1.ckpt", "checkpoint_03-nan.ckpt", "checkpoint_abort.ckpt"]
    for index, name in enumerate(names):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1000 + index, 1000 + index))
    assert ketos.best_checkpoint(tmp_path) == tmp_path / "checkpoint_02-0.7000-v1.ckpt"
    assert ketos.best_checkpoint(tmp_path / "nothing") is None


def test_commands_never_give_a_spec_with_a_loaded_model(tmp_path: Path) -> None:
    dataset = Dataset("train", tmp_path, "path", ("l1.png",), 1)
    fresh = ketos.command("train", dataset, 3, tmp_path / "out", "cpu", 2)
    assert fresh[1:7] == ["-d", "cpu", "--workers", "0", "--threads", "2"]
    assert fresh[7] == "train" and "-i" not in fresh and "-s" not in fresh
    assert fresh[fresh.index("-N") + 1] == "3" and fresh[fresh.index("-f") + 1] == "path"
    base = ketos.command("segtrain", Dataset("segtrain", tmp_path, "xml", ("p.xml",), 1), 1,
                         tmp_path / "out", "cuda:0", 4, base=tmp_path / "blla.mlmodel")
    assert base[base.index("-i") + 1] == str(tmp_path / "blla.mlmodel")
    assert base[base.index("--resize") + 1] == "union" and "-s" not in base
    resumed = ketos.command("train", dataset, 3, tmp_path / "out", "cpu", 2,
                            resume=tmp_path / "checkpoint_abort.ckpt")
    assert "--resume" in resumed and "-t" not in resumed and "-i" not in resumed
    manifest = ketos.write_manifest(dataset, tmp_path / "out")
    assert manifest.read_text() == f"{tmp_path / 'l1.png'}\n"
