"""The residency policy: a pure function from VRAM, profile, models and time to placements.

LLM first: when free VRAM falls under the low watermark, our models leave the GPU in
the profile's eviction order (embedding and rerank first, then segmentation, then OCR)
until the projected free memory reaches the high watermark. A model comes back only
when the lowest free VRAM seen over the last hold time leaves room for it above the
high watermark, and not sooner than the hold time after its own last move, so nothing
flaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from deployments.residency.profiles import Profile

Device = Literal["gpu", "cpu"]


@dataclass(frozen=True)
class Placement:
    device: Device
    since: float  # time of the last move (or of the start)
    reason: str = "start"


@dataclass(frozen=True)
class ResidencyState:
    placements: dict[str, Placement]
    # (time, free MB) readings covering the last hold time: the oldest one is at or
    # before its start, so its value held until the next reading.
    recent: tuple[tuple[float, int], ...] = ()
    history: tuple[Decision, ...] = field(default=())


@dataclass(frozen=True)
class Decision:
    deployment: str
    device: Device
    reason: str
    at: float


def initial_state(footprints: dict[str, int], now: float, gpu: bool) -> ResidencyState:
    device: Device = "gpu" if gpu else "cpu"
    return ResidencyState({name: Placement(device if mb else "cpu", now)
                           for name, mb in footprints.items()})


def decide(free_mb: int | None, profile: Profile, footprints: dict[str, int],
           state: ResidencyState, now: float, releasing_mb: int = 0) -> ResidencyState:
    """The next state; its history gains one Decision per model that moves.

    free_mb is the free VRAM of the GPU our models share, as measured (None: no GPU):
    memory a replica still holds counts as used until its move has run. releasing_mb is
    what replicas told to leave still hold: it is not evicted a second time by evicting
    more models, nor counted free for a model to return into."""
    placements = dict(state.placements)
    moves: list[Decision] = []

    def move(name: str, device: Device, reason: str) -> None:
        placements[name] = Placement(device, now, reason)
        moves.append(Decision(name, device, reason, now))

    if free_mb is None or not profile.use_gpu:
        why = "no GPU" if free_mb is None else f"profile {profile.name} keeps us on the CPU"
        for name, placement in placements.items():
            if placement.device == "gpu":
                move(name, "cpu", why)
        return replace(state, placements=placements, recent=(),
                       history=state.history + tuple(moves))

    order = [n for n in profile.eviction_order if n in placements] + sorted(
        n for n in placements if n not in profile.eviction_order)
    recent, covered = _window((*state.recent, (now, free_mb)), now - profile.hold_s)
    if free_mb + releasing_mb < profile.low_watermark_mb:
        projected = free_mb + releasing_mb
        for name in order:
            if projected >= profile.high_watermark_mb:
                break
            if placements[name].device == "gpu" and footprints.get(name, 0):
                move(name, "cpu", f"free VRAM {free_mb} MB < low watermark "
                                  f"{profile.low_watermark_mb} MB: the LLM needs it")
                projected += footprints[name]
    elif covered and not releasing_mb:
        available = min(free for _, free in recent)
        for name in reversed(order):  # the last to leave is the first to return
            placement, need = placements[name], footprints.get(name, 0)
            rested = now - placement.since >= profile.hold_s
            fits = available - need >= profile.high_watermark_mb
            if placement.device == "cpu" and need and rested and fits:
                move(name, "gpu", f"free VRAM stayed above {profile.high_watermark_mb} MB "
                                  f"+ {need} MB for {profile.hold_s:.0f} s")
                available -= need
    if any(m.device == "gpu" for m in moves):  # readings from before the return are stale
        recent = ((now, free_mb - sum(footprints[m.deployment] for m in moves)),)
    return replace(state, placements=placements, recent=recent,
                   history=state.history + tuple(moves))


def _window(readings: tuple[tuple[float, int], ...], start: float
            ) -> tuple[tuple[tuple[float, int], ...], bool]:
    """The readings that cover [start, now], and whether they reach back to start."""
    older = [r for r in readings if r[0] <= start]
    newer = tuple(r for r in readings if r[0] > start)
    return ((older[-1], *newer), True) if older else (newer, False)


@dataclass(frozen=True)
class KeepAlive:
    """What the llm OCR engine sends Ollama as keep_alive, and why."""

    busy: str  # while more of our pages wait for the VLM
    idle: str  # for the last page in flight
    reason: str


def keep_alive(profile: Profile, free_mb: int | None) -> KeepAlive:
    """keep_alive from the live VRAM: the profile's values while the GPU has room, "0"
    (unload after each page) while free VRAM is under the low watermark: the LLM's memory
    comes first. Reloading the VLM per page costs its whole load time on every page
    (bench/llm_concurrency.py measures it), so a document keeps it loaded when it can."""
    if free_mb is None:
        return KeepAlive(profile.llm_keep_alive_busy, profile.llm_keep_alive_idle,
                         "no GPU seen: the profile's values")
    if free_mb < profile.low_watermark_mb:
        return KeepAlive("0", "0", f"free VRAM {free_mb} MB < low watermark "
                         f"{profile.low_watermark_mb} MB: the VLM leaves after each page")
    return KeepAlive(profile.llm_keep_alive_busy, profile.llm_keep_alive_idle,
                     f"free VRAM {free_mb} MB >= low watermark {profile.low_watermark_mb} MB: "
                     "the VLM stays through a document")
