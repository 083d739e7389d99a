"""Replay LLM VRAM scenarios through the real residency policy and controller state machine.

    python bench/residency_sim.py [--profile llm-first] [SCENARIO.yaml ...]

Each poll the fake NVML (vram.ScenarioMonitor) reports the GPU as the LLM's demand plus
what our models hold; `Residency.poll` - the code the ResidencyController deployment
runs - decides. Printed per scenario: a timeline, and the targets: zero OOM-risk moments
(LLM demand + our resident footprint > GPU memory), reaction within 2 polls, at most one
move per model per hold time. A PNG per scenario goes to docs/img/, the summary to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import write_report  # noqa: E402 - after the path setup
from deployments.residency.controller import Residency  # noqa: E402
from deployments.residency.monitors import Scenario, ScenarioMonitor  # noqa: E402
from deployments.residency.profiles import load_profile  # noqa: E402

# The production set of serve_config.yaml (config/models.yaml footprints).
FOOTPRINTS = {"OCR": 600, "Segmentation": 900, "Embedding": 2600, "Rerank": 2600}
COLORS = {"OCR": (31, 119, 180), "Segmentation": (44, 160, 44), "Embedding": (255, 127, 14),
          "Rerank": (148, 103, 189)}


@dataclass
class Sample:
    t: float
    llm_mb: int
    free_mb: int
    resident_mb: int
    on_gpu: tuple[str, ...]
    risk: bool  # after this poll's decisions
    risk_before: bool  # at the instant the LLM's demand changed, before we reacted


@dataclass
class Result:
    scenario: Scenario
    samples: list[Sample]
    moves: list[tuple[float, str, str, str]]
    max_reaction_polls: int
    flaps: list[str]

    @property
    def risk_moments(self) -> int:
        return sum(s.risk for s in self.samples)

    @property
    def risk_before_reaction(self) -> int:
        return sum(s.risk_before for s in self.samples)


def simulate(scenario: Scenario, profile_name: str) -> Result:
    profile = load_profile(profile_name)
    clock = {"t": 0.0}
    residency = Residency(profile, FOOTPRINTS, gpu=True, now=0.0)
    residency.monitor = ScenarioMonitor(scenario, lambda: clock["t"], residency.resident_mb)
    samples, moves = [], []
    pressure_since: int | None = None
    reactions = [0]
    steps = int(scenario.duration_s / scenario.poll_s) + 1
    for step in range(steps):
        t = step * scenario.poll_s
        clock["t"] = t
        before = scenario.llm_mb(t) + residency.resident_mb() > scenario.total_mb
        made = residency.poll(t)
        moves += [(d.at, d.deployment, d.device, d.reason) for d in made]
        llm, resident = scenario.llm_mb(t), residency.resident_mb()
        free_after = scenario.total_mb - llm - resident
        # Reaction: polls from the first poll under the low watermark until free VRAM is
        # back over it (or nothing of ours is left on the GPU).
        if free_after < profile.low_watermark_mb and resident:
            pressure_since = step if pressure_since is None else pressure_since
        elif pressure_since is not None:
            reactions.append(step - pressure_since)
            pressure_since = None
        if pressure_since is not None and made:
            reactions.append(step - pressure_since)
        samples.append(Sample(t, llm, max(0, free_after), resident,
                              tuple(n for n in FOOTPRINTS if residency.placement(n) == "gpu"),
                              llm + resident > scenario.total_mb, before))
    flaps = []
    for name in FOOTPRINTS:
        times = [at for at, who, _, _ in moves if who == name]
        flaps += [f"{name} at {b:.0f}s" for a, b in itertools.pairwise(times)
                  if b - a < profile.hold_s]
    return Result(scenario, samples, moves, max(reactions), flaps)


def timeline(result: Result) -> str:
    lines = [f"{'t':>5} {'LLM MB':>7} {'free MB':>8} {'ours MB':>8}  on GPU"]
    previous: tuple[str, ...] | None = None
    for sample in result.samples:
        if sample.on_gpu != previous or sample.t % 10 == 0 or sample.risk:
            lines.append(f"{sample.t:5.0f} {sample.llm_mb:7d} {sample.free_mb:8d} "
                         f"{sample.resident_mb:8d}  {','.join(sample.on_gpu) or '-'}"
                         + ("  OOM RISK" if sample.risk else ""))
            previous = sample.on_gpu
    lines += [f"  move at {at:.0f}s: {who} -> {device} ({why})"
              for at, who, device, why in result.moves]
    return "\n".join(lines)


def plot(result: Result, target: Path) -> None:
    """LLM demand and our models' VRAM over time, stacked against the GPU's size."""
    from PIL import Image, ImageDraw

    width, height, left, top, bottom = 900, 360, 70, 30, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    total, duration = result.scenario.total_mb, result.scenario.duration_s
    plot_w, plot_h = width - left - 20, height - top - bottom

    def x(t: float) -> float:
        return left + t / duration * plot_w

    def y(mb: float) -> float:
        return top + plot_h - mb / total * plot_h

    for sample in result.samples:  # our models, stacked above the LLM
        base = sample.llm_mb
        for name in sample.on_gpu:
            mb = FOOTPRINTS[name]
            draw.rectangle([x(sample.t), y(base + mb), x(sample.t + result.scenario.poll_s),
                            y(base)], fill=COLORS[name])
            base += mb
        draw.rectangle([x(sample.t), y(sample.llm_mb), x(sample.t + result.scenario.poll_s),
                        y(0)], fill=(200, 200, 200))
    draw.line([x(0), y(total), x(duration), y(total)], fill="red", width=2)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for mb in range(0, total + 1, 4096):
        draw.text((5, y(mb) - 6), f"{mb // 1024} GB", fill="black")
    for t in range(0, int(duration) + 1, 10):
        draw.text((x(t) - 8, top + plot_h + 5), f"{t}s", fill="black")
    legend = [("LLM", (200, 200, 200)), *list(COLORS.items()), ("GPU size", (255, 0, 0))]
    for i, (label, color) in enumerate(legend):
        draw.rectangle([left + i * 130, height - 18, left + i * 130 + 12, height - 6], fill=color)
        draw.text((left + i * 130 + 16, height - 19), label, fill="black")
    draw.text((left, 8), f"scenario {result.scenario.name}: LLM VRAM (grey) and our models "
                         "(colours) per poll", fill="black")
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", type=Path,
                        default=sorted((ROOT / "bench" / "scenarios").glob("*.yaml")))
    parser.add_argument("--profile", default="llm-first")
    args = parser.parse_args()
    rows, failed = [], False
    for path in args.scenarios:
        result = simulate(Scenario.load(path), args.profile)
        print(f"== {result.scenario.name} ({args.profile})\n{timeline(result)}\n")
        plot(result, ROOT / "docs" / "img" / f"residency-{result.scenario.name}.png")
        ok = result.risk_moments == 0 and result.max_reaction_polls <= 2 and not result.flaps
        failed |= not ok
        rows.append(f"| {result.scenario.name} | {result.risk_moments} | "
                    f"{result.risk_before_reaction} | "
                    f"{result.max_reaction_polls} | {len(result.moves)} | "
                    f"{', '.join(result.flaps) or 'none'} | {'pass' if ok else 'FAIL'} |")
    report = (f"Profile `{args.profile}`, models {FOOTPRINTS} (MB), one poll per scenario "
              "step.\n\n| scenario | OOM-risk moments | at the instant of a jump, before the "
              "poll reacted | max reaction (polls) | moves | moves within a hold time | "
              "targets |\n|---|---|---|---|---|---|---|\n"
              + "\n".join(rows) + "\n")
    print(report)
    write_report(report, "residency_sim")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
