"""The embedding encoder exported to ONNX, and run in torch's place, on a replica without
a GPU.

On the CPU, ONNX Runtime's kernels run the same packed forwards faster than torch's eager
operators: 2 cores, all-MiniLM-L6-v2, the Embedding's packed rows, one process, four
rounds each: 16 sentences a forward 456-464 sentences/s against torch's 379-404, 64
length-sorted 488-516 against 400-418 (ADR 013). Only the encoder (BERT, RoBERTa, XLM-R:
what packing.py packs) is exported, with the inputs PackedEncoder hands it, so ONNX
Runtime computes for each text what torch does (within float rounding:
tests/unit/deployments/engines/test_onnx_encoder.py). BGE-M3's heads (sparse, colbert)
run in torch on what `OnnxEncoder` gives; a dense model, once exported, runs without
torch (exported.py).

The export is built in a staging folder and renamed into place (onnx_export.py says
where), so a start that dies halfway leaves nothing another start would load. On a
machine with a GPU the model stays on torch: residency moves it between devices, and ONNX
Runtime's CPU session would hold a second copy of its weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deployments.engines.embedding.onnx_export import (
    ENGINE_FILE,
    INPUTS,
    MODEL_FILE,
    TOKENIZER_FILE,
    export_folder,
    session,
)
from deployments.engines.embedding.packing import EncoderOutput

logger = logging.getLogger(__name__)


class _KeywordCall(torch.nn.Module):
    """The encoder called as PackedEncoder calls it, with positional inputs to export."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, token_type_ids=token_type_ids,
                            return_dict=True).last_hidden_state


class OnnxEncoder(torch.nn.Module):
    """The encoder's call (ids, a [rows, width] or [rows, width, width] mask, positions,
    token types) run by an ONNX Runtime session; a module without parameters, so it can
    stand where PackedEncoder holds the torch encoder."""

    def __init__(self, session: Any, config: Any, first_position: int) -> None:
        super().__init__()
        self.session = session
        self.config = config
        self.first_position = first_position

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                return_dict: bool = True) -> EncoderOutput:
        rows, width = input_ids.shape
        if attention_mask.dim() == 2:  # a padded batch (PackedEncoder's fallback)
            real = attention_mask.bool()
            attention_mask = real[:, :, None] == real[:, None, :]  # padding sees padding
        if position_ids is None:
            position_ids = (torch.arange(width) + self.first_position).expand(rows, width)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        feed = {"input_ids": input_ids, "attention_mask": attention_mask.bool(),
                "position_ids": position_ids, "token_type_ids": token_type_ids}
        hidden = self.session.run(None, {name: np.ascontiguousarray(value.numpy())
                                         for name, value in feed.items()})[0]
        return EncoderOutput(last_hidden_state=torch.from_numpy(hidden))


def export(encoder: Any, first_position: int, folder: Path) -> None:
    """Write the encoder's graph to `folder/MODEL_FILE` (weights over 2 GB beside it).
    Traced on two rows holding two texts each, so the mask's path is the one traced."""
    vocab = int(encoder.config.vocab_size)
    ids = torch.arange(16).remainder(vocab - 10).add(5).view(2, 8)
    segment = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 3, 3, -1]])
    mask = segment[:, :, None] == segment[:, None, :]
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 0, 1, 0]])
    example = (ids, mask, positions + first_position, torch.zeros_like(ids))
    dynamic = {name: {0: "rows", 1: "width"} for name in (*INPUTS, "last_hidden_state")}
    dynamic["attention_mask"] = {0: "rows", 1: "width", 2: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape checks
        torch.onnx.export(_KeywordCall(encoder).eval(), example, str(folder / MODEL_FILE),
                          input_names=list(INPUTS), output_names=["last_hidden_state"],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)


def export_into(folder: Path, encoder: Any, first_position: int, tokenizer: Any,
                staging_dir: Path) -> None:
    """`export`, the tokenizer and ENGINE_FILE into a staging folder, renamed to `folder`
    once whole. A tokenizer without a Rust backend is not written: later starts then load
    the model through FlagEmbedding, as this one did."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnx-", dir=staging_dir,
                                     ignore_cleanup_errors=True) as building:
        export(encoder, first_position, Path(building))
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            (Path(building) / TOKENIZER_FILE).write_text(backend.to_str(), encoding="utf-8")
            (Path(building) / ENGINE_FILE).write_text(json.dumps({
                "model_type": encoder.config.model_type,
                "pad_token_id": encoder.config.pad_token_id,
                "tokenizer_pad_id": tokenizer.pad_token_id or 0}), encoding="utf-8")
        with contextlib.suppress(OSError):  # another replica's export landed first: same graph
            os.replace(building, folder)


def onnx_encoder(encoder: Any, first_position: int, tokenizer: Any, model: str,
                 weights: Path, cache_dir: Path, staging_dir: Path) -> OnnxEncoder | None:
    """The encoder on ONNX Runtime, exported first where the cache has no usable export;
    None (and a warning saying why) where it cannot be, and the model stays on torch."""
    config = encoder.config
    folder = export_folder(cache_dir, model, weights)
    path = folder / MODEL_FILE
    try:
        if path.is_file():
            try:
                return OnnxEncoder(session(path), config, first_position)
            except Exception as error:  # damaged on disk since it was written: made again
                logger.warning("the cached ONNX export %s does not load (%s); exporting again",
                               folder, error)
                shutil.rmtree(folder, ignore_errors=True)
        export_into(folder, encoder, first_position, tokenizer, staging_dir)
        return OnnxEncoder(session(path), config, first_position)
    except Exception as error:  # the torch encoder works: keep it
        logger.warning("the %s encoder stays on torch: ONNX Runtime could not take it (%s: %s)",
                       config.model_type, type(error).__name__, error)
        return None
