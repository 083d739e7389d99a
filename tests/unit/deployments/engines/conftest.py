"""What every engine test shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_threads() -> Iterator[None]:
    """An embedding engine on ONNX Runtime sets torch's threads to one for the process
    (ADR 013); the tests after it get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
