"""The residency policy over tables of VRAM snapshots: LLM first, hysteresis, every profile."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.residency.policy import ResidencyState, decide, initial_state, keep_alive
from deployments.residency.profiles import load_profile

FOOT = {"OCR": 600, "Segmentation": 900, "Embedding": 2600, "Rerank": 2600}
PROFILES = ["llm-first", "balanced", "ocr-batch", "cpu-only"]


def devices(state: ResidencyState) -> dict[str, str]:
    return {name: p.device for name, p in state.placements.items()}


def start() -> ResidencyState:
    return initial_state(FOOT, now=0.0, gpu=True)


def test_no_gpu_puts_everything_on_the_cpu() -> None:
    state = decide(None, load_profile("llm-first"), FOOT, start(), now=1)
    assert set(devices(state).values()) == {"cpu"}
    assert all(d.reason == "no GPU" for d in state.history)


def test_cpu_only_profile_leaves_the_gpu_to_the_llm() -> None:
    state = decide(20000, load_profile("cpu-only"), FOOT, start(), now=1)
    assert set(devices(state).values()) == {"cpu"}


@pytest.mark.parametrize(
    ("free_mb", "expected_on_cpu"),
    [
        (8000, set()),                              # plenty
        (5000, set()),                              # between the watermarks: no change
        (4095, {"Rerank"}),                         # just under low: 4095 + 2600 >= 6144
        (3000, {"Rerank", "Embedding"}),            # 3000 + 2600 < 6144, + 2600 >= 6144
        (500, {"Rerank", "Embedding", "Segmentation"}),  # 500+2600+2600+900 = 6600
        (0, {"Rerank", "Embedding", "Segmentation", "OCR"}),
    ],
)
def test_pressure_evicts_in_order_until_the_high_watermark(free_mb: int,
                                                           expected_on_cpu: set[str]) -> None:
    state = decide(free_mb, load_profile("llm-first"), FOOT, start(), now=1)
    assert {n for n, d in devices(state).items() if d == "cpu"} == expected_on_cpu
    assert all("low watermark" in d.reason for d in state.history)


def test_models_return_only_after_calm_for_the_hold_time() -> None:
    profile = load_profile("llm-first")  # hold 30 s, high watermark 6144
    state = decide(0, profile, FOOT, start(), now=0)
    assert set(devices(state).values()) == {"cpu"}
    state = decide(20000, profile, FOOT, state, now=1)      # calm starts
    assert set(devices(state).values()) == {"cpu"}
    state = decide(20000, profile, FOOT, state, now=20)     # not long enough
    assert set(devices(state).values()) == {"cpu"}
    state = decide(20000, profile, FOOT, state, now=31)     # 30 s calm, 31 s since the move
    assert set(devices(state).values()) == {"gpu"}
    returned = [d.deployment for d in state.history if d.device == "gpu"]
    assert returned == ["OCR", "Segmentation", "Embedding", "Rerank"]  # last out, first in


def test_a_dip_within_the_hold_time_keeps_models_out() -> None:
    profile = load_profile("llm-first")
    state = decide(0, profile, FOOT, start(), now=0)
    state = decide(20000, profile, FOOT, state, now=1)
    state = decide(4500, profile, FOOT, state, now=20)       # dip: no room even for OCR
    state = decide(20000, profile, FOOT, state, now=21)
    state = decide(20000, profile, FOOT, state, now=45)      # the dip is within 30 s
    assert set(devices(state).values()) == {"cpu"}
    state = decide(20000, profile, FOOT, state, now=51)      # 30 s of room since 21
    assert set(devices(state).values()) == {"gpu"}


def test_only_models_that_fit_above_the_watermark_return() -> None:
    profile = load_profile("llm-first")
    state = decide(0, profile, FOOT, start(), now=0)
    state = decide(9000, profile, FOOT, state, now=1)
    state = decide(9000, profile, FOOT, state, now=40)
    # 9000 - 600 - 900 = 7500 >= 6144; Embedding would leave 4900 < 6144.
    assert {n for n, d in devices(state).items() if d == "gpu"} == {"OCR", "Segmentation"}


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_frees_just_enough_and_returns_when_free(name: str) -> None:
    profile = load_profile(name)
    state = decide(0, profile, FOOT, start(), now=0)
    evicted = [d.deployment for d in state.history]
    if not profile.use_gpu:
        assert set(devices(state).values()) == {"cpu"}
        return
    # A prefix of the eviction order, just long enough to free the high watermark.
    assert evicted == [n for n in profile.eviction_order if n in FOOT][: len(evicted)]
    freed = sum(FOOT[n] for n in evicted)
    assert freed >= profile.high_watermark_mb or len(evicted) == len(FOOT)
    assert freed - FOOT[evicted[-1]] < profile.high_watermark_mb
    for t in range(1, 200, 5):
        state = decide(24000, profile, FOOT, state, now=t)
    assert set(devices(state).values()) == ({"cpu"} if not profile.use_gpu else {"gpu"})


def test_keep_alive_follows_the_live_vram_within_the_profile() -> None:
    profile = load_profile("llm-first")
    roomy = keep_alive(profile, profile.low_watermark_mb + 1)
    assert (roomy.busy, roomy.idle) == (profile.llm_keep_alive_busy,
                                        profile.llm_keep_alive_idle)
    assert (roomy.busy, roomy.idle) != ("0", "0")  # no reload per page while there is room
    tight = keep_alive(profile, profile.low_watermark_mb - 1)
    assert (tight.busy, tight.idle) == ("0", "0") and "low watermark" in tight.reason
    assert keep_alive(load_profile("ocr-batch"), None).busy == "30m"


def test_a_pending_release_is_not_evicted_for_twice() -> None:
    """The Embedding was told to leave but still holds its 2600 MB: free VRAM still reads
    low, and without counting that release the policy would also evict Segmentation."""
    profile = load_profile("balanced")  # low 2048, high 4096
    state = initial_state(FOOT, 0.0, True)
    state = decide(1500, profile, FOOT, state, now=1.0)
    assert devices(state)["Rerank"] == "cpu" and devices(state)["Embedding"] == "gpu"
    state = decide(1500, profile, FOOT, state, now=2.0, releasing_mb=2600)
    assert devices(state) == {"OCR": "gpu", "Segmentation": "gpu", "Embedding": "gpu",
                              "Rerank": "cpu"}
    state = decide(1500, profile, FOOT, state, now=3.0)  # nothing pending: evict more
    assert devices(state)["Embedding"] == "cpu"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=24000), min_size=1, max_size=120))
def test_no_model_returns_to_the_gpu_twice_within_a_hold_time(frees: list[int]) -> None:
    profile = load_profile("llm-first")
    state = start()
    for t, free in enumerate(frees):
        state = decide(free, profile, FOOT, state, now=float(t))
    for name in FOOT:
        returns = [d.at for d in state.history if d.deployment == name and d.device == "gpu"]
        assert all(b - a >= profile.hold_s for a, b in itertools.pairwise(returns))


def test_a_model_does_not_return_the_moment_the_llm_unloads() -> None:
    """The room must have lasted the hold time: an LLM gone one poll ago proves nothing."""
    profile = load_profile("llm-first")
    state = start()
    for t in range(0, 60):
        state = decide(24576 - 14336 - 6700 if t == 0 else 8740, profile, FOOT, state, now=t)
    for t in range(60, 89):
        state = decide(23076, profile, FOOT, state, now=t)
        assert devices(state)["Embedding"] == "cpu", t
    state = decide(23076, profile, FOOT, state, now=90)
    assert devices(state)["Embedding"] == "gpu"
