"""A dense model run from its ONNX export without torch: packed rows, the session, the
model's pooling, normalized.

A dense model's forward after its encoder is the pooling and a normalization, which
numpy does as FlagModel does them in torch. So once the export is on disk, the replica
needs neither torch nor the model's own code: a restart builds the engine in about a third
of the CPU time (torch's import alone is about 2 CPU s on 2 cores) and holds about 350 MB
less, and the first start, once it has exported, runs the same code as every later one.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from deployments.engines.embedding.onnx_export import CachedExport
from deployments.engines.embedding.rows import PackedRows, first_position_of

# FlagModel's poolings (`BaseEmbedder.pooling`) that `ExportedEncoder` does.
POOLINGS = frozenset({"cls", "mean"})
# torch.nn.functional.normalize's floor for a vector's norm.
NORM_FLOOR = 1e-12


class ExportedEncoder:
    """`embed(batch)`: the texts' unit vectors, as FlagModel(normalize_embeddings=True)
    gives them, from one packed forward of the export's session."""

    def __init__(self, export: CachedExport, pooling: str) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {sorted(POOLINGS)}")
        self.session = export.session
        self.pooling = pooling
        self.first_position = first_position_of(export.config)
        self.fill = int(export.config.pad_token_id or 0)

    def embed(self, batch: list[list[int]]) -> np.ndarray:
        plan = PackedRows.of([len(ids) for ids in batch])
        shape = (plan.rows, plan.width)
        ids = np.full(plan.rows * plan.width, self.fill, dtype=np.int64)
        ids[plan.cells] = np.fromiter(chain.from_iterable(batch[i] for i in plan.order),
                                      dtype=np.int64, count=len(plan.cells))
        segment = plan.segments()
        hidden = self.session.run(None, {
            "input_ids": ids.reshape(shape),
            "attention_mask": segment[:, :, None] == segment[:, None, :],
            "position_ids": plan.positions(self.first_position),
            "token_type_ids": np.zeros(shape, dtype=np.int64),
        })[0]
        tokens = hidden.reshape(plan.rows * plan.width, -1)[plan.cells]  # in plan order
        if self.pooling == "cls":
            pooled = tokens[plan.starts]
        else:
            sums = np.add.reduceat(tokens, plan.starts, axis=0)
            pooled = sums / plan.sizes[:, None].astype(tokens.dtype)
        vectors = np.empty_like(pooled)
        vectors[plan.order] = pooled
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, NORM_FLOOR)
