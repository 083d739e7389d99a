"""What an OCR engine is: page image in, lines with geometry out."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np

from serve_app.kernel.pages import Line


class OcrEngine(Protocol):
    """Recognises every text line of one RGB page image."""

    name: ClassVar[str]
    # True for engines that read the baseline lines of the Segmentation deployment
    # (options["segmentation"]) instead of finding lines themselves.
    reads_baselines: ClassVar[bool]

    async def recognize(self, image: np.ndarray, options: dict[str, Any]) -> list[Line]: ...

    def move(self, device: str) -> None: ...


class EngineUnavailable(RuntimeError):
    """An engine whose program or data is not installed on this replica's node."""
