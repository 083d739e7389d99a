"""The ResidencyController switches profiles at run time through its user_config."""

from __future__ import annotations

import pytest

from deployments.residency.controller import Residency, ResidencyController
from deployments.residency.profiles import load_profile


def test_profile_switch_at_runtime_through_user_config() -> None:
    controller = object.__new__(ResidencyController.func_or_class)
    controller.residency = Residency(load_profile("llm-first"), {"OCR": 600}, True, 0.0)
    controller.reconfigure({"profile": "ocr-batch"})
    assert controller.residency.profile.name == "ocr-batch"
    with pytest.raises(ValueError, match="known"):
        controller.reconfigure({"profile": "nonsense"})
