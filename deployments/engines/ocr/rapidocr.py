"""rapidocr: PP-OCR detection and recognition through onnxruntime; the weights ship
inside its wheel, so it works offline out of the box.

On the CPU each page runs on one core, and as many pages at once as the replica may use
cores (`usable_cores`). onnxruntime's default splits one page over every core, whose
threads wait for the slowest at every operator: on 2 cores beside Ray's own processes, a
page at a time read 0.8 of rapidocr alone in a quiet process; a page per core reads
faster than rapidocr alone (docs/benchmarks.md). A single page on its own takes longer
so; a document's pages are in flight together (OCR_PAGES_IN_FLIGHT). The catalog's
options can set `EngineConfig.onnxruntime.intra_op_num_threads` back.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from deployments.models import ModelSpec
from serve_app.kernel.geometry import bbox_of, confidence
from serve_app.kernel.pages import Line
from serve_app.kernel.settings import Settings

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, within its container's CPU quota
    (cgroup v2 `cpu.max`), which affinity does not show: a pod limited to 2 CPUs on a
    64-core node must not read 64 pages at once."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
        limit = None if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError):  # no cgroup v2 here, or a format we do not know
        limit = None
    return cores if limit is None else min(cores, max(1, limit))


class RapidOcrEngine:
    """PP-OCR through rapidocr's ONNX runtime."""

    name: ClassVar[str] = "rapidocr"
    reads_baselines: ClassVar[bool] = False

    def __init__(self, spec: ModelSpec, settings: Settings, device: str):
        self.spec = spec
        self._pages_at_once = asyncio.Semaphore(usable_cores())
        self.move(device)

    def move(self, device: str) -> None:
        """onnxruntime sessions are bound to a provider: a move builds new ones."""
        from rapidocr import RapidOCR

        params: dict[str, Any] = {"Global.log_level": "warning",
                                  "EngineConfig.onnxruntime.use_cuda": device == "cuda",
                                  "EngineConfig.onnxruntime.intra_op_num_threads": 1}
        params.update(self.spec.options)
        self._ocr = RapidOCR(params=params)

    async def recognize(self, image: np.ndarray, options: dict[str, Any]) -> list[Line]:
        async with self._pages_at_once:
            return await asyncio.to_thread(self._recognize, image)

    def _recognize(self, image: np.ndarray) -> list[Line]:
        result = self._ocr(image)
        if result.boxes is None or result.txts is None:
            return []
        lines = []
        for box, text, score in zip(result.boxes, result.txts, result.scores, strict=True):
            polygon = [(round(float(x), 1), round(float(y), 1)) for x, y in box]
            lines.append(Line(text=text, bbox=bbox_of(polygon), polygon=polygon,
                              confidence=confidence(score)))
        # Reading order: top to bottom, then left to right within a visual row.
        lines.sort(key=lambda line: (round(line["bbox"][1] / 20), line["bbox"][0]))
        return lines
