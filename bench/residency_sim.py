"""Replay LLM VRAM scenarios through the real residency state machine and simulated
replicas whose moves take time.

    python bench/residency_sim.py [--profile llm-first] [--move-s-per-gb 1.0] [SCENARIO.yaml ...]

The clock runs in steps of 0.1 s. Every poll the controller's `Residency` (the code the
ResidencyController deployment runs) reads a fake NVML whose LLM share follows the
scenario and whose share of ours is what the simulated replicas hold, and decides. Every
poll each replica reports what it holds and, told to move, starts a move that takes
`--move-s-per-gb` per GB of its footprint; it holds its GPU memory until the move has run
(a move to the GPU holds it from the start). OOM risk is measured from what the replicas
hold, never from the decisions: a tenth of a second in which the LLM's demand plus our
held memory exceeds the GPU. Printed per scenario: a timeline and the targets: no OOM
risk once the first poll that sees a jump has reacted and its moves have run, reaction
within 2 polls, at most one move per model per hold time. PNGs go to docs/img/, the
summary to docs/benchmarks.md.
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
from deployments.residency.controller import ReplicaReport, Residency  # noqa: E402
from deployments.residency.monitors import Scenario, ScenarioMonitor  # noqa: E402
from deployments.residency.profiles import load_profile  # noqa: E402

# The production set of serve_config.yaml (config/models.yaml footprints).
FOOTPRINTS = {"OCR": 600, "Segmentation": 900, "Embedding": 2600, "Rerank": 2600}
COLORS = {"OCR": (31, 119, 180), "Segmentation": (44, 160, 44), "Embedding": (255, 127, 14),
          "Rerank": (148, 103, 189)}


STEP_S = 0.1
GPU = "sim:0"


@dataclass
class SimReplica:
    """A replica that holds its footprint while on (or moving to or from) the GPU."""

    name: str
    footprint_mb: int
    placement: str = "gpu"
    moving_to: str | None = None
    done_at: float = 0.0

    def held_mb(self) -> int:
        return self.footprint_mb if self.placement == "gpu" or self.moving_to == "gpu" else 0

    def tick(self, t: float) -> None:
        if self.moving_to is not None and t >= self.done_at - 1e-9:
            self.placement, self.moving_to = self.moving_to, None


@dataclass
class Sample:
    t: float
    llm_mb: int
    free_mb: int
    held_mb: int
    on_gpu: tuple[str, ...]
    risk: bool  # the LLM's demand plus what we hold exceeds the GPU
    excused: bool  # ... while the first reaction to a jump is still running


@dataclass
class Result:
    scenario: Scenario
    samples: list[Sample]
    moves: list[tuple[float, str, str, str]]
    max_reaction_polls: int
    flaps: list[str]

    @property
    def risk_s(self) -> float:
        return round(sum(s.risk for s in self.samples) * STEP_S, 1)

    @property
    def risk_after_reaction_s(self) -> float:
        return round(sum(s.risk and not s.excused for s in self.samples) * STEP_S, 1)


def simulate(scenario: Scenario, profile_name: str, move_s_per_gb: float = 1.0) -> Result:
    profile = load_profile(profile_name)
    clock = {"t": 0.0}
    replicas = {name: SimReplica(name, mb) for name, mb in FOOTPRINTS.items()}
    residency = Residency(profile, FOOTPRINTS, gpu=True, now=0.0, node="sim")
    residency.poll_s = scenario.poll_s
    residency.monitor = ScenarioMonitor(
        scenario, lambda: clock["t"], lambda: sum(r.held_mb() for r in replicas.values()))
    samples, moves = [], []
    pressure_since: int | None = None
    reactions = [0]  # a reaction in the very poll that saw the pressure counts 0
    excused_until = -1.0
    poll_every = round(scenario.poll_s / STEP_S)
    previous_llm = scenario.llm_mb(0.0)
    for step in range(int(scenario.duration_s / STEP_S) + 1):
        t = round(step * STEP_S, 3)
        clock["t"] = t
        for replica in replicas.values():
            replica.tick(t)
        llm = scenario.llm_mb(t)
        if llm > previous_llm:  # a jump: excused until a poll has seen it and moves ran
            excused_until = max(excused_until, t + scenario.poll_s)
        previous_llm = llm
        if step % poll_every == 0:
            poll = step // poll_every
            for replica in replicas.values():
                residency.report(ReplicaReport(replica.name, replica.name, GPU,
                                               "cuda" if replica.held_mb() else "cpu",
                                               replica.held_mb(), t))
            made = residency.poll(t)
            moves += [(d.at, d.deployment, d.device, d.reason) for d in made]
            for replica in replicas.values():
                wanted = residency.placement(replica.name, GPU)
                if wanted != replica.placement and replica.moving_to is None:
                    replica.moving_to = wanted
                    replica.done_at = t + replica.footprint_mb / 1024 * move_s_per_gb
                    if t < excused_until and wanted == "cpu":
                        excused_until = max(excused_until, replica.done_at)
            # Reaction: polls from the first poll that saw free VRAM under the low watermark
            # (with no release already on its way) to the poll that decided moves.
            held = sum(r.held_mb() for r in replicas.values())
            releasing = any(r.moving_to == "cpu" for r in replicas.values())
            pressed = scenario.total_mb - llm - held < profile.low_watermark_mb and any(
                r.placement == "gpu" for r in replicas.values())
            if pressed and not releasing and pressure_since is None and not made:
                pressure_since = poll
            if made and pressure_since is not None:
                reactions.append(poll - pressure_since)
                pressure_since = None
            elif not pressed:
                pressure_since = None
        held = sum(r.held_mb() for r in replicas.values())
        samples.append(Sample(t, llm, max(0, scenario.total_mb - llm - held), held,
                              tuple(n for n, r in replicas.items() if r.held_mb()),
                              llm + held > scenario.total_mb, t <= excused_until))
    flaps = []
    for name in FOOTPRINTS:
        times = [at for at, who, _, _ in moves if who == name]
        flaps += [f"{name} at {b:.0f}s" for a, b in itertools.pairwise(times)
                  if b - a < profile.hold_s]
    return Result(scenario, samples, moves, max(reactions), flaps)


def timeline(result: Result) -> str:
    lines = [f"{'t':>6} {'LLM MB':>7} {'free MB':>8} {'held MB':>8}  held on GPU"]
    previous: tuple[str, ...] | None = None
    for sample in result.samples:
        if sample.on_gpu != previous or sample.t % 10 == 0 or sample.risk:
            lines.append(f"{sample.t:6.1f} {sample.llm_mb:7d} {sample.free_mb:8d} "
                         f"{sample.held_mb:8d}  {','.join(sample.on_gpu) or '-'}"
                         + ("  OOM RISK" + (" (reacting)" if sample.excused else "")
                            if sample.risk else ""))
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
            draw.rectangle([x(sample.t), y(base + mb), x(sample.t + STEP_S),
                            y(base)], fill=COLORS[name])
            base += mb
        draw.rectangle([x(sample.t), y(sample.llm_mb), x(sample.t + STEP_S),
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
    draw.text((left, 8), f"scenario {result.scenario.name}: LLM VRAM (grey) and what our "
                         "replicas hold (colours), moves taking time", fill="black")
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", type=Path,
                        default=sorted((ROOT / "bench" / "scenarios").glob("*.yaml")))
    parser.add_argument("--profile", default="llm-first")
    parser.add_argument("--move-s-per-gb", type=float, default=1.0)
    args = parser.parse_args()
    rows, failed = [], False
    for path in args.scenarios:
        result = simulate(Scenario.load(path), args.profile, args.move_s_per_gb)
        print(f"== {result.scenario.name} ({args.profile})\n{timeline(result)}\n")
        plot(result, ROOT / "docs" / "img" / f"residency-{result.scenario.name}.png")
        ok = (result.risk_after_reaction_s == 0 and result.max_reaction_polls <= 2
              and not result.flaps)
        failed |= not ok
        rows.append(f"| {result.scenario.name} | {result.risk_s} | "
                    f"{result.risk_after_reaction_s} | "
                    f"{result.max_reaction_polls} | {len(result.moves)} | "
                    f"{', '.join(result.flaps) or 'none'} | {'pass' if ok else 'FAIL'} |")
    report = (f"Profile `{args.profile}`, models {FOOTPRINTS} (MB), a poll every scenario "
              f"step, moves taking {args.move_s_per_gb} s per GB; OOM risk measured from "
              "what the simulated replicas hold.\n\n| scenario | OOM risk (s) | OOM risk "
              "once the first reaction's moves ran (s) | max reaction (polls) | moves | "
              "moves within a hold time | targets |\n|---|---|---|---|---|---|---|\n"
              + "\n".join(rows) + "\n")
    print(report)
    write_report(report, "residency_sim")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
