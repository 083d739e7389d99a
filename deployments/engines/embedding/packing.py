"""Packed forwards: a batch's texts laid end to end in rows, so the encoder spends no work
on padding.

A padded forward computes every text at the length of the batch's longest: 16 sentences
of 6-14 words are about a third padding. Here the texts of a forward are laid end to end
in rows of at least PACK_WIDTH tokens (rows.py plans where), with an attention mask that
keeps each text to itself and positions that restart at each text, so the encoder
computes for each text what it computes for it alone (within float rounding:
tests/unit/deployments/engines/test_packing.py) and nothing for padding. The wrapper
takes the padded batch the model's own forward hands its encoder and gives back its
hidden states in that layout, so the model's pooling and heads (FlagModel's, BGEM3's)
run unchanged; a dense model from its ONNX export runs the same rows without torch
(exported.py). TEI does the same with varlen attention kernels; a mask does it with the
encoder's own code.

Rows are short because attention inside a row costs its width squared for every text in
it: on 2 CPU cores with all-MiniLM-L6-v2, 16 unsorted sentences a forward ran at 426
sentences/s packed in rows of 32, 397 in rows of 64, 364 in rows of 128, against 354
padded (three runs each, one process); 64 sentences a forward sorted by length, as the
best padded batching gets, 440-453 padded and 451-481 packed in rows of 32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deployments.engines.embedding.rows import PACK_WIDTH, PACKABLE, PackedRows, first_position_of


@dataclass
class EncoderOutput:
    """What the models' own forwards read of their encoder's output (`.last_hidden_state`),
    without importing transformers."""

    last_hidden_state: torch.Tensor


class PackedEncoder(torch.nn.Module):
    """The encoder behind a padded interface, run on the batch's texts packed in rows.

    Takes right-padded `input_ids` and `attention_mask` ([texts, longest]), as the model's
    own forward builds them; returns `last_hidden_state` in that layout, zeros at padding.
    """

    def __init__(self, encoder: Any, width: int = PACK_WIDTH) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.width = width
        self.first_position = first_position_of(encoder.config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                return_dict: bool = True) -> Any:
        """Every other input an encoder takes (token types, positions) would be lost in
        the packing, so none is accepted."""
        texts, longest = input_ids.shape
        plan = PackedRows.of(attention_mask.sum(dim=1).tolist(), self.width)
        if plan.rows * plan.width >= texts * longest:
            # Nothing to save (texts of one length, one text a row): the encoder's own
            # padded forward, without a rows x width x width mask, which for long texts
            # is large (a text of 8,192 tokens: 64 MB, and four times that as floats).
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                return_dict=True)
        rows, width = plan.rows, plan.width
        padded_at = np.repeat(plan.order * longest, plan.sizes) + plan.step

        device = input_ids.device
        packed_at_t = torch.from_numpy(plan.cells).to(device)
        padded_at_t = torch.from_numpy(padded_at).to(device)
        ids = input_ids.new_full((rows * width,), int(self.config.pad_token_id or 0))
        ids[packed_at_t] = input_ids.reshape(-1)[padded_at_t]
        positions = torch.from_numpy(plan.positions(self.first_position)).to(device)
        segment = torch.from_numpy(plan.segments()).to(device)
        mask = segment[:, :, None] == segment[:, None, :]  # padding cells see padding only

        hidden = self.encoder(input_ids=ids.view(rows, width), attention_mask=mask,
                              position_ids=positions,
                              token_type_ids=torch.zeros_like(ids).view(rows, width),
                              return_dict=True).last_hidden_state
        size = hidden.shape[-1]
        out = hidden.new_zeros(texts * longest, size)
        out[padded_at_t] = hidden.reshape(-1, size)[packed_at_t]
        return EncoderOutput(last_hidden_state=out.view(texts, longest, size))


def packed(encoder: Any) -> Any:
    """The encoder wrapped to run packed, or itself where packing would change its results:
    an architecture whose positions or attention mask this module does not know."""
    config = encoder.config
    if (config.model_type in PACKABLE and not config.is_decoder
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and config._attn_implementation in ("sdpa", "eager")):
        return PackedEncoder(encoder)
    return encoder
